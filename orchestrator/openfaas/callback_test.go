package openfaas

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openfaas/faas-provider/types"

	"github.com/microfaas/microfaas/orchestrator"
)

func TestCallbackAllowed(t *testing.T) {
	allow := []string{"gateway", "10.0.0.0/8", "192.168.1.5", "fd00::/8"}
	for host, want := range map[string]bool{
		"gateway": true, "GATEWAY": true, "10.1.2.3": true, "192.168.1.5": true, "fd00::1": true,
		"127.0.0.1": false, "169.254.169.254": false, "192.168.1.6": false, "gateway.evil": false, "localhost": false,
	} {
		if got := callbackAllowed(allow, host); got != want {
			t.Errorf("callbackAllowed(%q) = %v, want %v", host, got, want)
		}
	}
	if !callbackAllowed(nil, "127.0.0.1") {
		t.Error("no allow-list must allow any host")
	}
}

// TestCallbackAllowList: with an allow-list, an async call whose callback
// points elsewhere (here mforch's own host) is refused before it is queued.
func TestCallbackAllowList(t *testing.T) {
	h, _ := newSimHarness(t, 1, 0, orchestrator.Config{}, Config{CallbackAllow: []string{"10.0.0.0/8"}})
	h.call("POST", "/system/functions", types.FunctionDeployment{Service: "mm", Image: "microfaas/matmul"})
	cb := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("a callback reached a host outside the allow-list")
	}))
	defer cb.Close()
	res, b := h.call("POST", "/async-function/mm", `{"A":[[1]],"B":[[1]]}`, "X-Callback-Url", cb.URL)
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("callback to %s: %d %s, want 400", cb.URL, res.StatusCode, b)
	}
}

// listenOn starts a test server on a loopback address of its own, so the
// allow-list can tell two servers on this host apart.
func listenOn(t *testing.T, ip string, h http.Handler) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Skipf("cannot listen on %s: %v", ip, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// TestCallbackRedirect is issue 18's attack 7: a callback host on the
// allow-list answers 307 to a host that is not on it. The output must not
// be posted there; a redirect within the list is still followed.
func TestCallbackRedirect(t *testing.T) {
	var mu sync.Mutex
	stolen, delivered := 0, map[string]string{}
	steal := listenOn(t, "127.0.0.2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		stolen++
		mu.Unlock()
		t.Errorf("the callback reached %s, off the allow-list: %s", r.Host, b)
	}))
	var allowed *httptest.Server
	allowed = listenOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, steal.URL+"/loot", http.StatusTemporaryRedirect)
		case "/moved":
			http.Redirect(w, r, allowed.URL+"/final", http.StatusTemporaryRedirect)
		default:
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			delivered[r.URL.Path] = string(b)
			mu.Unlock()
		}
	}))
	h, _ := newSimHarness(t, 1, 0, orchestrator.Config{}, Config{CallbackAllow: []string{"127.0.0.1"}})
	h.call("POST", "/system/functions", types.FunctionDeployment{Service: "mm", Image: "microfaas/matmul"})
	for _, path := range []string{"/away", "/moved"} {
		res, b := h.call("POST", "/async-function/mm", `{"A":[[2]],"B":[[3]]}`, "X-Callback-Url", allowed.URL+path)
		if res.StatusCode != http.StatusAccepted {
			t.Fatalf("async call with callback %s: %d %s", path, res.StatusCode, b)
		}
	}
	// Close waits for the async calls and their callbacks.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if stolen != 0 {
		t.Errorf("%d callbacks posted to %s", stolen, steal.URL)
	}
	if delivered["/final"] == "" {
		t.Errorf("the redirect within the allow-list was not followed: %q", delivered)
	}
	if !strings.Contains(h.logs.String(), errCallbackRefused.Error()) {
		t.Errorf("the refused redirect was not logged:\n%s", h.logs.String())
	}
}

// TestCallbackDialChecked: the address a callback connection is made to is
// checked against the allow-list after name resolution, whatever the URL
// said, so a name rebound to another address does not pass.
func TestCallbackDialChecked(t *testing.T) {
	got := 0
	var mu sync.Mutex
	srv := listenOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got++
		mu.Unlock()
	}))
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	tests := []struct {
		allow   []string
		url     string
		refused bool
	}{
		{[]string{"127.0.0.2"}, "http://127.0.0.1:" + port, true},
		// localhost resolves to 127.0.0.1 (and perhaps ::1): a name not
		// listed reaches only listed addresses.
		{[]string{"127.0.0.2/32"}, "http://localhost:" + port, true},
		{[]string{"127.0.0.0/8", "::1"}, "http://localhost:" + port, false},
		{[]string{"localhost"}, "http://localhost:" + port, false},
		{[]string{"127.0.0.1"}, "http://127.0.0.1:" + port, false},
		{nil, "http://127.0.0.1:" + port, false},
	}
	for _, tt := range tests {
		mu.Lock()
		before := got
		mu.Unlock()
		res, err := callbackClient(tt.allow, 10*time.Second).Post(tt.url, "text/plain", strings.NewReader("output"))
		if err == nil {
			res.Body.Close()
		}
		mu.Lock()
		reached := got > before
		mu.Unlock()
		if tt.refused && (!errors.Is(err, errCallbackRefused) || reached) {
			t.Errorf("allow %v, %s: err %v, reached %v; want refused at the dial", tt.allow, tt.url, err, reached)
		}
		if !tt.refused && (err != nil || !reached) {
			t.Errorf("allow %v, %s: err %v, reached %v; want delivered", tt.allow, tt.url, err, reached)
		}
	}
}
