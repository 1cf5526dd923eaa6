package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serveDefaults runs `mforch serve` in-process with its defaults (no
// credentials given, no workers), with its state under a temporary
// XDG_STATE_HOME, and returns its API address and that state folder.
// extra are more flags.
func serveDefaults(t *testing.T, extra ...string) (api, state string) {
	t.Helper()
	state = t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	t.Setenv("STATE_DIRECTORY", "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, append([]string{"--workers", "0", "--http", addr, "--grace", "1s",
			"--results", filepath.Join(dir, "results.csv"), "--log-dir", dir}, extra...))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mforch serve: %v", err)
		}
	})
	api = "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := http.Get(api + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return api, state
			}
		}
		select {
		case err := <-done:
			t.Fatalf("mforch serve stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mforch serve not answering on %s: %v", api, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// send makes one request; hdr are header name/value pairs ("Host" sets the
// Host header).
func send(t *testing.T, method, url, user, pw, body string, hdr ...string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if user != "" {
		req.SetBasicAuth(user, pw)
	}
	res, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestServeDefaultsAttacks is issue 18's attacks 4 (the API half) and 5
// against `mforch serve` as it starts with no flags about auth: a function
// (or anyone on the host) calling the loopback API without credentials,
// and a web page in the operator's browser (which may hold cached basic
// auth for the API) posting text/plain with a foreign Origin or through a
// rebinding DNS name.
func TestServeDefaultsAttacks(t *testing.T) {
	api, state := serveDefaults(t)
	authDir := filepath.Join(state, "microfaas", "auth")
	user, _ := os.ReadFile(filepath.Join(authDir, "basic-auth-user"))
	pw, err := os.ReadFile(filepath.Join(authDir, "basic-auth-password"))
	if err != nil {
		t.Fatalf("no generated credentials under %s: %v", authDir, err)
	}
	u, p := strings.TrimSpace(string(user)), strings.TrimSpace(string(pw))
	if u != "admin" || len(p) < 20 {
		t.Fatalf("generated credentials: user %q, password of %d characters", u, len(p))
	}
	for _, f := range []string{authDir, filepath.Join(authDir, "basic-auth-password")} {
		if fi, err := os.Stat(f); err != nil {
			t.Error(err)
		} else if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v, want owner-only", f, fi.Mode().Perm())
		}
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(api, "http://"))
	rebound := "attacker.example:" + port
	secret := `{"name":"stolen","value":"x"}`
	deploy := `{"service":"evil","image":"microfaas/float_operations"}`
	tests := []struct {
		name         string
		method, path string
		creds        bool
		body         string
		hdr          []string
		want         int
	}{
		// Attack 4: no credentials.
		{"list functions without credentials", "GET", "/system/functions", false, "", nil, 401},
		{"status without credentials", "GET", "/status", false, "", nil, 401},
		{"secret without credentials", "POST", "/system/secrets", false, secret, []string{"Content-Type", "application/json"}, 401},
		// Attack 5, each part alone, with the browser's cached credentials.
		{"text/plain secret", "POST", "/system/secrets", true, secret, []string{"Content-Type", "text/plain"}, 415},
		{"form deploy", "POST", "/system/functions", true, deploy, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415},
		{"text/plain invoke", "POST", "/invoke/float_operations?async=true", true, `{}`, []string{"Content-Type", "text/plain"}, 415},
		{"foreign Origin secret", "POST", "/system/secrets", true, secret, []string{"Content-Type", "application/json", "Origin", "http://attacker.example"}, 403},
		{"foreign Origin list", "GET", "/system/functions", true, "", []string{"Origin", "http://attacker.example"}, 403},
		{"cross-site fetch of a function", "GET", "/function/evil", false, "", []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"rebinding Host list", "GET", "/system/functions", true, "", []string{"Host", rebound}, 403},
		{"rebinding Host deploy", "POST", "/system/functions", true, deploy, []string{"Content-Type", "application/json", "Host", rebound}, 403},
		// All three at once, as the page sent them.
		{"all three", "POST", "/system/secrets", true, secret, []string{"Content-Type", "text/plain", "Origin", "http://attacker.example", "Host", rebound}, 403},
		// What must keep working.
		{"same-origin browser list", "GET", "/system/functions", true, "", []string{"Origin", api, "Sec-Fetch-Site", "same-origin"}, 200},
		{"localhost list", "GET", "/system/functions", true, "", []string{"Host", "localhost:" + port}, 200},
		{"status", "GET", "/status", true, "", nil, 200},
		{"healthz", "GET", "/healthz", false, "", nil, 200},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A secret of its own per case, so one that got through
			// does not make the next one answer 409.
			body := strings.Replace(tt.body, `"stolen"`, fmt.Sprintf(`"stolen-%d"`, i), 1)
			var user, pw string
			if tt.creds {
				user, pw = u, p
			}
			got, body := send(t, tt.method, api+tt.path, user, pw, body, tt.hdr...)
			if got != tt.want {
				t.Errorf("%s %s: %d %s, want %d", tt.method, tt.path, got, strings.TrimSpace(body), tt.want)
			}
			if strings.Contains(body, p) {
				t.Errorf("the answer holds the password: %s", body)
			}
		})
	}
	// Nothing the attacks sent was kept.
	if got, body := send(t, "GET", api+"/system/secrets", u, p, ""); got != 200 || strings.Contains(body, "stolen") {
		t.Errorf("secrets after the attacks: %d %s", got, body)
	}
	if got, body := send(t, "GET", api+"/system/functions", u, p, ""); got != 200 || strings.Contains(body, "evil") {
		t.Errorf("functions after the attacks: %d %s", got, body)
	}
}

// TestStatusFindsCredentials: `mforch status` against a default `mforch
// serve` works without being given the credentials, and an error never
// shows a password given in --addr.
func TestStatusFindsCredentials(t *testing.T) {
	api, _ := serveDefaults(t)
	if err := runStatus(context.Background(), []string{"--addr", api, "--json"}); err != nil {
		t.Fatalf("mforch status with the generated credentials: %v", err)
	}
	withPW := strings.Replace(api, "http://", "http://admin:hunter2-secret@", 1)
	err := runStatus(context.Background(), []string{"--addr", withPW})
	if err == nil {
		t.Fatal("wrong password in --addr: no error")
	}
	if strings.Contains(err.Error(), "hunter2-secret") {
		t.Errorf("the error shows the password: %v", err)
	}
	t.Logf("wrong password: %v", err)
}
