package openfaas

import (
	"net/http"
	"net/http/httptest"
	"testing"

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
