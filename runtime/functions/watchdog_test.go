package functions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/protocol"
)

// buildWatchdog compiles the stand-in watchdog (testdata/fwatchdog), static.
func buildWatchdog(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "fwatchdog")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/fwatchdog")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the stand-in watchdog: %v\n%s", err, b)
	}
	return out
}

// freePort is a loopback port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// watchdogImage lays out an image whose entrypoint is the stand-in
// watchdog, as a bundle unpacks: dir/config.json and dir/rootfs.
func watchdogImage(t *testing.T, bin string, env ...string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rootfs", "fwatchdog"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(ImageConfig{Entrypoint: []string{"/fwatchdog"}, Env: env})
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("image functions need root (the worker is PID 1 as root)")
	}
}

// TestWatchdogForwardsHTTP: a watchdog image is started once, in the
// sandbox, and each call reaches it as the caller made it (method, path,
// query, headers, binary body); its status, headers and binary body come
// back unchanged, with what it logged for that call only.
func TestWatchdogForwardsHTTP(t *testing.T) {
	needRoot(t)
	port := freePort(t)
	dir := watchdogImage(t, buildWatchdog(t), "port="+strconv.Itoa(port))
	wd, err := StartWatchdog("echo", dir, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer wd.Stop()
	want := make([]byte, 256)
	for i := range want {
		want[i] = byte(i)
	}
	calls := []struct {
		req      protocol.HTTPRequest
		body     []byte // after the 256 byte values
		log      string
		notInLog string
	}{
		{protocol.HTTPRequest{Method: "POST", Path: "/a%2Fb/c", Query: "q=1&x=%20y", Header: map[string][]string{"X-In": {"hi"}},
			Body: []byte{0, 1, 0xff, '\n'}}, []byte{'\n', 0xff, 1, 0},
			"call POST /a%2Fb/c query=q=1&x=%20y x-in=hi len=4", ""},
		{protocol.HTTPRequest{Method: "PUT", Path: "again", Header: map[string][]string{"X-In": {"two"}}}, nil,
			"call PUT /again query= x-in=two len=0", "listening"},
	}
	for i, c := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		resp, log, err := wd.Call(ctx, &c.req)
		cancel()
		if err != nil {
			t.Fatalf("call %d: %v (log %q)", i, err, log)
		}
		if resp.Status != 418 {
			t.Errorf("call %d: status %d, want 418", i, resp.Status)
		}
		if got := resp.Header["X-Out"]; !slices.Equal(got, []string{strings.ToUpper(c.req.Header["X-In"][0])}) {
			t.Errorf("call %d: X-Out %v", i, got)
		}
		if got := resp.Header["X-Multi"]; !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("call %d: X-Multi %v, want [a b]", i, got)
		}
		if !bytes.Equal(resp.Body, append(append([]byte{}, want...), c.body...)) {
			t.Errorf("call %d: body %x", i, resp.Body)
		}
		if !strings.Contains(log, c.log) {
			t.Errorf("call %d: log %q, want %q in it", i, log, c.log)
		}
		if c.notInLog != "" && strings.Contains(log, c.notInLog) {
			t.Errorf("call %d: log %q holds %q, from an earlier call", i, log, c.notInLog)
		}
		if i == 0 && !strings.Contains(log, "listening on "+strconv.Itoa(port)+" as uid 65534") {
			t.Errorf("first call: log %q lacks the start-up line (run as nobody)", log)
		}
	}
	wd.Stop()
	if !wd.Exited() {
		t.Fatal("Stop returned with the watchdog running")
	}
	if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
		c.Close()
		t.Fatal("the port still accepts after Stop")
	}
}

// TestWatchdogStarting: while its function is not up, a watchdog answers
// with its own 5xx (X-OpenFaaS-Internal): the call is sent again until the
// function answers. Once it has, every answer comes back as it is, the
// watchdog's own errors and the function's 500 alike.
func TestWatchdogStarting(t *testing.T) {
	needRoot(t)
	dir := watchdogImage(t, buildWatchdog(t), "port="+strconv.Itoa(freePort(t)), "STARTING=3")
	wd, err := StartWatchdog("slow", dir, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer wd.Stop()
	tests := []struct {
		path   string
		status int
		log    int // "upstream not up" lines in this call's log
	}{
		{"/first", 418, 3},
		{"/internal", 502, 1},
		{"/own500", 500, 0},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		resp, log, err := wd.Call(ctx, &protocol.HTTPRequest{Method: "GET", Path: tt.path})
		cancel()
		if err != nil {
			t.Fatalf("%s: %v (log %q)", tt.path, err, log)
		}
		if resp.Status != tt.status {
			t.Errorf("%s: status %d, want %d", tt.path, resp.Status, tt.status)
		}
		if n := strings.Count(log, "upstream not up"); n != tt.log {
			t.Errorf("%s: %d answers while starting, want %d (log %q)", tt.path, n, tt.log, log)
		}
	}
}

// TestWatchdogFailures: a watchdog that cannot answer fails the call with
// ErrWatchdog and its log, and never hangs past the job's time.
func TestWatchdogFailures(t *testing.T) {
	needRoot(t)
	bin := buildWatchdog(t)
	tests := []struct {
		name    string
		env     []string
		path    string
		timeout time.Duration
		log     string
	}{
		{"dies at start", []string{"MODE=die"}, "/", 20 * time.Second, "cannot start"},
		{"never listens", []string{"MODE=nolisten"}, "/", 2 * time.Second, "starting slowly"},
		{"exits during the call", nil, "/exit", 20 * time.Second, "dying"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := watchdogImage(t, bin, append(tt.env, "port="+strconv.Itoa(freePort(t)))...)
			wd, err := StartWatchdog("bad", dir, Env{})
			if err != nil {
				t.Fatal(err)
			}
			defer wd.Stop()
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			start := time.Now()
			resp, log, err := wd.Call(ctx, &protocol.HTTPRequest{Method: "GET", Path: tt.path})
			if !errors.Is(err, ErrWatchdog) {
				t.Fatalf("err = %v, resp %+v, want ErrWatchdog", err, resp)
			}
			if !strings.Contains(log, tt.log) {
				t.Errorf("log %q, want %q in it", log, tt.log)
			}
			if d := time.Since(start); d > tt.timeout+5*time.Second {
				t.Errorf("took %s, past the job's time %s", d, tt.timeout)
			}
		})
	}
	t.Run("port taken", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		dir := watchdogImage(t, bin, "port="+strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
		if _, err := StartWatchdog("taken", dir, Env{}); !errors.Is(err, ErrWatchdog) || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("err = %v, want ErrWatchdog naming the port in use", err)
		}
	})
	t.Run("bad port", func(t *testing.T) {
		dir := watchdogImage(t, bin, "port=http")
		if _, err := StartWatchdog("badport", dir, Env{}); err == nil || !strings.Contains(err.Error(), "not a TCP port") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestTail: a call's log is what was written since its mark, bounded to
// the last bytes.
func TestTail(t *testing.T) {
	tl := NewTail(8)
	tl.Write([]byte("abc"))
	m := tl.Mark()
	tl.Write([]byte("de"))
	if got := tl.Since(m); got != "de" {
		t.Errorf("Since = %q, want de", got)
	}
	tl.Write([]byte("0123456789"))
	if got := tl.Since(m); got != "23456789" {
		t.Errorf("Since after overflow = %q, want the last 8 bytes", got)
	}
	if got := tl.Since(tl.Mark()); got != "" {
		t.Errorf("Since(now) = %q", got)
	}
}
