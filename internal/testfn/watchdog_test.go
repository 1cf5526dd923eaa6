package testfn_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
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
	// Its own process group, killed whole: of-watchdog's fprocess (the
	// handler) outlived a kill of the watchdog alone, and held the flock
	// of the run that started the tests.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	seen, drained := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
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

// TestThirdPartyWatchdogSources fails when a file of third_party/NAME is
// not the upstream file its README.md records, or the README does not
// name the commit and tag internal/testfn pins.
func TestThirdPartyWatchdogSources(t *testing.T) {
	for _, w := range []testfn.Watchdog{testfn.OfWatchdog, testfn.ClassicWatchdog} {
		t.Run(w.Name, func(t *testing.T) {
			dir := testfn.SourceDir(w)
			if _, err := testfn.CheckSource(dir); err != nil {
				t.Fatal(err)
			}
			readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"Commit: `" + w.Commit + "`", "release tag `" + w.Tag + "`", "https://github.com/openfaas/" + w.Name} {
				if !strings.Contains(string(readme), want) {
					t.Errorf("%s/README.md does not say %q", dir, want)
				}
			}
			rec, err := testfn.RecordedHashes(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"LICENSE", "go.mod", "go.sum", "main.go"} {
				if rec[f] == "" {
					t.Errorf("%s/README.md does not list %s", dir, f)
				}
			}
			license, _ := os.ReadFile(filepath.Join(dir, "LICENSE"))
			if !bytes.HasPrefix(license, []byte("MIT License")) {
				t.Errorf("%s/LICENSE does not start with \"MIT License\"", dir)
			}
		})
	}
}

func TestCheckSource(t *testing.T) {
	files := map[string]string{"LICENSE": "MIT License\n", "main.go": "package main\n", "pkg/a.go": "package pkg\n"}
	readme := "# x\n\n```\n"
	for _, name := range []string{"LICENSE", "main.go", "pkg/a.go"} {
		readme += fmt.Sprintf("%x  %s\n", sha256.Sum256([]byte(files[name])), name)
	}
	readme += "```\n"
	tests := []struct {
		name   string
		change func(dir string) error
		want   error // nil: no error
	}{
		{"intact", func(string) error { return nil }, nil},
		{"edited", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main // edited\n"), 0o644)
		}, testfn.ErrSourceModified},
		{"added", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "pkg", "b.go"), []byte("package pkg\n"), 0o644)
		}, testfn.ErrSourceModified},
		{"removed", func(dir string) error { return os.Remove(filepath.Join(dir, "pkg", "a.go")) }, testfn.ErrSourceModified},
		{"symlink in place of a file", func(dir string) error {
			p := filepath.Join(dir, "main.go")
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.Symlink("LICENSE", p)
		}, testfn.ErrSourceModified},
		{"no hashes in the README", func(dir string) error { return os.WriteFile(filepath.Join(dir, "README.md"), []byte("# x\n"), 0o644) }, testfn.ErrSourceModified},
		{"no README", func(dir string) error { return os.Remove(filepath.Join(dir, "README.md")) }, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, "pkg"), 0o755); err != nil {
				t.Fatal(err)
			}
			for name, data := range files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte(readme), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := tt.change(dir); err != nil {
				t.Fatal(err)
			}
			manifest, err := testfn.CheckSource(dir)
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("CheckSource: %v", err)
			case tt.want == nil && strings.Count(manifest, "\n") != 2:
				t.Errorf("manifest %q: want the 3 recorded files", manifest)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Errorf("CheckSource: %v; want %v", err, tt.want)
			}
		})
	}
}

// TestBuildWatchdogCache builds the classic watchdog from third_party into
// an empty cache: a static x86-64 binary stamped with the pinned tag. A
// second call reads the cache entry instead of building.
func TestBuildWatchdogCache(t *testing.T) {
	cacheDir := t.TempDir()
	w := testfn.ClassicWatchdog
	b, err := testfn.BuildWatchdog(w, testfn.AMD64, cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not an ELF file: %v", err)
	}
	if f.Machine != elf.EM_X86_64 {
		t.Errorf("machine %v; want EM_X86_64", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("has a program interpreter: want a static binary")
		}
	}
	if !bytes.Contains(b, []byte(w.Commit)) {
		t.Errorf("binary does not carry the commit %s (ldflags -X main.GitCommit)", w.Commit)
	}
	entries, _ := filepath.Glob(filepath.Join(cacheDir, "testbin", w.Name+"-*-amd64"))
	if len(entries) != 1 {
		t.Fatalf("cache entries %v; want one %s-KEY-amd64", entries, w.Name)
	}
	if err := os.WriteFile(entries[0], []byte("cached"), 0o755); err != nil {
		t.Fatal(err)
	}
	again, err := testfn.BuildWatchdog(w, testfn.AMD64, cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != "cached" {
		t.Errorf("second build did not use the cache entry %s", entries[0])
	}
}
