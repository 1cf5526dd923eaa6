package testfn_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microfaas/microfaas/internal/testfn"
)

// metricsPort is where both watchdogs serve Prometheus metrics, fixed (no
// setting); they panic when it is taken.
const metricsPort = "127.0.0.1:8081"

func TestOfWatchdogOnHost(t *testing.T) {
	wd := hostBinary(t, "fwatchdog", testfn.WatchdogBinary(t, testfn.OfWatchdog, testfn.AMD64))
	handler := hostBinary(t, "handler", testfn.GoBinary(t, "handler", testfn.AMD64))
	upstream := "http://127.0.0.1:" + freePort(t)
	url := startWatchdog(t, wd, []string{"mode=http", "upstream_url=" + upstream, "fprocess=" + handler},
		"Listening on port", "handler listening on")

	body := []byte("\x00\xffhello")
	resp, err := postRetry(t, url, body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Fn") != "yes" {
		t.Errorf("status %d, X-Fn %q; want 201 and yes", resp.StatusCode, resp.Header.Get("X-Fn"))
	}
	if want := append(testfn.HandlerPrefix(), body...); !bytes.Equal(got, want) {
		t.Errorf("body % x\nwant % x", got, want)
	}
}

func TestClassicWatchdogOnHost(t *testing.T) {
	wd := hostBinary(t, "fwatchdog", testfn.WatchdogBinary(t, testfn.ClassicWatchdog, testfn.AMD64))
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skipf("busybox-static missing (make deps installs it): %v", err)
	}
	script := filepath.Join(t.TempDir(), "fn.sh")
	if err := os.WriteFile(script, []byte(testfn.ClassicScript), 0o644); err != nil {
		t.Fatal(err)
	}
	url := startWatchdog(t, wd, []string{"fprocess=/bin/busybox sh " + script}, "Listening on port")

	resp, err := postRetry(t, url, []byte("hello\n"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(got) != "hello\ndone\n" {
		t.Errorf("status %d body %q; want 200 %q", resp.StatusCode, got, "hello\ndone\n")
	}
}

// hostBinary writes b as an executable in the test's folder.
func hostBinary(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

// startWatchdog runs the watchdog at bin with env (plus its own port and
// lock-file folder) until the test ends, and returns its URL once its log
// has shown every ready line.
func startWatchdog(t *testing.T, bin string, env []string, ready ...string) string {
	t.Helper()
	if ln, err := net.Listen("tcp", metricsPort); err != nil {
		t.Skipf("the watchdog's fixed metrics port %s is taken: %v", metricsPort, err)
	} else {
		ln.Close()
	}
	port := freePort(t)
	pr, pw := io.Pipe()
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "port=" + port, "TMPDIR=" + t.TempDir()}, env...)
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	seen, drained := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		pw.Close()
		<-drained // no t.Log after the test ends
	})
	go func() {
		defer close(drained)
		left := map[string]bool{}
		for _, r := range ready {
			left[r] = true
		}
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			t.Log(sc.Text())
			if len(left) == 0 {
				continue // already ready: keep draining the log
			}
			for r := range left {
				if strings.Contains(sc.Text(), r) {
					delete(left, r)
				}
			}
			if len(left) == 0 {
				close(seen)
			}
		}
	}()
	select {
	case <-seen:
	case <-time.After(30 * time.Second):
		t.Fatalf("watchdog did not log %q within 30s", ready)
	}
	return "http://127.0.0.1:" + port + "/"
}

// postRetry posts body to url. The watchdogs log "Listening on port"
// just before they bind it, so a refused connection is tried again
// (bounded) rather than taken as a failure.
func postRetry(t *testing.T, url string, body []byte) (*http.Response, error) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		resp, err := http.Post(url, "application/octet-stream", bytes.NewReader(body))
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || i == 400 {
			return resp, err
		}
		<-tick.C
	}
}
