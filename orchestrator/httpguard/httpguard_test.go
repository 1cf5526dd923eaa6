package httpguard

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serve runs the guard over a handler that echoes the body length, on a
// real listener, and returns its address.
func serve(t *testing.T, cfg Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "ok %d", len(b))
	})
	srv := Server("", Wrap(h, cfg))
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// raw sends a raw request and returns the status code of the answer.
func raw(t *testing.T, addr, req string, stall time.Duration) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestAuthOnEveryRoute(t *testing.T) {
	addr := serve(t, Config{User: "admin", Password: "pw", Open: []string{"/healthz"}})
	tests := []struct {
		method, path string
		user, pw     string
		want         int
	}{
		{"POST", "/invoke/cascading_md5", "", "", 401},
		{"GET", "/status", "", "", 401},
		{"GET", "/invocations/abc", "", "", 401},
		{"POST", "/function/f", "", "", 401},
		{"POST", "/async-function/f", "", "", 401},
		{"GET", "/system/functions", "", "", 401},
		{"GET", "/status", "admin", "wrong", 401},
		{"GET", "/status", "root", "pw", 401},
		{"GET", "/healthzz", "", "", 401},
		{"GET", "/healthz", "", "", 200},
		{"GET", "/status", "admin", "pw", 200},
		{"POST", "/invoke/cascading_md5", "admin", "pw", 200},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, "http://"+addr+tt.path, strings.NewReader("{}"))
		if tt.user != "" {
			req.SetBasicAuth(tt.user, tt.pw)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s as %q: %d, want %d", tt.method, tt.path, tt.user, resp.StatusCode, tt.want)
		}
	}
}

func TestBodyLimits(t *testing.T) {
	addr := serve(t, Config{MaxBody: 1000, BodyTimeout: 300 * time.Millisecond})
	big := strings.Repeat("x", 1001)
	tests := []struct {
		name  string
		req   string
		stall time.Duration
		want  int
	}{
		{"within the limit", "POST /invoke/f HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 0, 200},
		{"declared too large", "POST /invoke/f HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n" + big, 0, 413},
		{"chunked too large", "POST /invoke/f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n" + big + "\r\n0\r\n\r\n", 0, 413},
		// A slow body: 10 of 100 bytes, then nothing.
		{"slow body", "POST /invoke/f HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789", 0, 408},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			if got := raw(t, addr, tt.req, tt.stall); got != tt.want {
				t.Fatalf("status %d, want %d", got, tt.want)
			}
			if tt.want == 408 && time.Since(start) > 10*time.Second {
				t.Errorf("the slow body held the connection %s", time.Since(start))
			}
		})
	}
}
