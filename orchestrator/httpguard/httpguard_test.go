package httpguard

import (
	"bufio"
	"errors"
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
		{"within the limit", "POST /invoke/f HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc", 0, 200},
		{"declared too large", "POST /invoke/f HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1001\r\n\r\n" + big, 0, 413},
		{"chunked too large", "POST /invoke/f HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n" + big + "\r\n0\r\n\r\n", 0, 413},
		// A slow body: 10 of 100 bytes, then nothing.
		{"slow body", "POST /invoke/f HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n0123456789", 0, 408},
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

func TestCheckBrowser(t *testing.T) {
	cfg := Config{AllowHosts: []string{"mforch.lab"}, AllowOrigins: []string{"http://gateway:8080"}}
	tests := []struct {
		name    string
		host    string
		hdr     []string
		wantErr error
	}{
		{"loopback address", "127.0.0.1:8080", nil, nil},
		{"IPv6 loopback", "[::1]:8080", nil, nil},
		{"another address", "10.0.2.2:8080", nil, nil},
		{"localhost", "localhost:8080", nil, nil},
		{"localhost with a dot", "LocalHost.:8080", nil, nil},
		{"a .localhost name", "api.localhost:8080", nil, nil},
		{"no Host (HTTP/1.0)", "", nil, nil},
		{"allowed name", "MFORCH.lab:8080", nil, nil},
		{"rebinding name", "attacker.example:8080", nil, ErrHost},
		{"localhost lookalike", "localhost.attacker.example:8080", nil, ErrHost},
		{"allowed name's subdomain", "x.mforch.lab", nil, ErrHost},
		{"same origin", "127.0.0.1:8080", []string{"Origin", "http://127.0.0.1:8080"}, nil},
		{"same origin, default port", "localhost", []string{"Origin", "http://localhost:80"}, nil},
		{"listed origin", "127.0.0.1:8081", []string{"Origin", "http://gateway:8080", "Sec-Fetch-Site", "cross-site"}, nil},
		{"foreign origin", "127.0.0.1:8080", []string{"Origin", "http://attacker.example"}, ErrCrossOrigin},
		{"other port", "127.0.0.1:8080", []string{"Origin", "http://127.0.0.1:3000"}, ErrCrossOrigin},
		{"https origin", "127.0.0.1:8080", []string{"Origin", "https://127.0.0.1:8080"}, ErrCrossOrigin},
		{"null origin (sandboxed frame)", "127.0.0.1:8080", []string{"Origin", "null"}, ErrCrossOrigin},
		{"typed URL", "127.0.0.1:8080", []string{"Sec-Fetch-Site", "none"}, nil},
		{"same-origin fetch", "127.0.0.1:8080", []string{"Sec-Fetch-Site", "same-origin"}, nil},
		{"cross-site image", "127.0.0.1:8080", []string{"Sec-Fetch-Site", "cross-site"}, ErrCrossOrigin},
		{"same-site other port", "127.0.0.1:8080", []string{"Sec-Fetch-Site", "same-site"}, ErrCrossOrigin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "http://127.0.0.1/status", nil)
			r.Host = tt.host
			for i := 0; i+1 < len(tt.hdr); i += 2 {
				r.Header.Set(tt.hdr[i], tt.hdr[i+1])
			}
			err := CheckBrowser(r, cfg)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("CheckBrowser: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestCheckJSON(t *testing.T) {
	tests := []struct {
		method, ct string
		wantErr    bool
	}{
		{"POST", "application/json", false},
		{"POST", "application/json; charset=utf-8", false},
		{"PUT", "Application/JSON", false},
		{"POST", "", false}, // the OpenFaaS gateway's scale request
		{"POST", "text/plain", true},
		{"POST", "text/plain;charset=UTF-8", true},
		{"DELETE", "application/x-www-form-urlencoded", true},
		{"PATCH", "multipart/form-data; boundary=x", true},
		{"POST", "application/json-seq", true},
		{"POST", "bogus;;", true},
		{"GET", "text/plain", false},
	}
	for _, tt := range tests {
		r, _ := http.NewRequest(tt.method, "http://127.0.0.1/system/secrets", strings.NewReader("{}"))
		if tt.ct != "" {
			r.Header.Set("Content-Type", tt.ct)
		}
		err := CheckJSON(r)
		if tt.wantErr != errors.Is(err, ErrNotJSON) || !tt.wantErr && err != nil {
			t.Errorf("%s with %q: %v, want error %v", tt.method, tt.ct, err, tt.wantErr)
		}
	}
}

// TestGuardOrder: the guard answers each refusal with its status, and a
// function's body (RawBody routes) may have any type.
func TestGuardOrder(t *testing.T) {
	addr := serve(t, Config{User: "admin", Password: "pw", Open: []string{"/function/"}, RawBody: []string{"/function/"}})
	tests := []struct {
		name, method, path, host, ct, origin string
		creds                                bool
		want                                 int
	}{
		{"rebinding host before credentials", "POST", "/system/secrets", "evil.example", "application/json", "", false, 403},
		{"foreign origin with credentials", "POST", "/system/secrets", "", "application/json", "http://evil.example", true, 403},
		{"no credentials", "POST", "/system/secrets", "", "text/plain", "", false, 401},
		{"text/plain with credentials", "POST", "/system/secrets", "", "text/plain", "", true, 415},
		{"JSON with credentials", "POST", "/system/secrets", "", "application/json", "", true, 200},
		{"text/plain to a function", "POST", "/function/f", "", "text/plain", "", false, 200},
		{"foreign origin to a function", "POST", "/function/f", "", "text/plain", "http://evil.example", false, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "http://"+addr+tt.path, strings.NewReader("{}"))
			if tt.host != "" {
				req.Host = tt.host
			}
			req.Header.Set("Content-Type", tt.ct)
			if tt.origin != "" {
				req.Header.Set("Origin", tt.origin)
			}
			if tt.creds {
				req.SetBasicAuth("admin", "pw")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}
