package openfaas

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/openfaas/faas-provider/types"

	"github.com/microfaas/microfaas/orchestrator"
)

// TestJSONRoutesRefuseOtherTypes: the provider's JSON routes refuse a body
// declared as another type (415) by themselves, without mforch's guard in
// front: a browser form or a no-CORS fetch (text/plain) cannot deploy,
// update, delete, scale or create secrets. A body without a type passes:
// the OpenFaaS gateway's scale request sends none.
func TestJSONRoutesRefuseOtherTypes(t *testing.T) {
	h, _ := newSimHarness(t, 1, 0, orchestrator.Config{}, Config{})
	h.call("POST", "/system/functions", types.FunctionDeployment{Service: "mm", Image: "microfaas/matmul"})
	deploy := `{"service":"evil","image":"microfaas/matmul"}`
	tests := []struct {
		method, path, ct, body string
		want                   int
	}{
		{"POST", "/system/secrets", "text/plain", `{"name":"s1","value":"x"}`, 415},
		{"POST", "/system/functions", "application/x-www-form-urlencoded", deploy, 415},
		{"PUT", "/system/functions", "text/plain", `{"service":"mm","image":"microfaas/float_operations"}`, 415},
		{"DELETE", "/system/functions", "text/plain", `{"functionName":"mm"}`, 415},
		{"POST", "/system/scale-function/mm", "text/plain", `{"serviceName":"mm","replicas":1}`, 415},
		{"POST", "/system/scale-function/mm", "", `{"serviceName":"mm","replicas":0}`, 202},
		{"POST", "/system/secrets", "application/json; charset=utf-8", `{"name":"s2","value":"x"}`, 201},
		{"POST", "/system/secrets", "application/json", `{"name":"s3","value":"` + strings.Repeat("x", 1<<20) + `"}`, 413},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
		if tt.ct != "" {
			req.Header.Set("Content-Type", tt.ct)
		}
		w := httptest.NewRecorder()
		h.p.Handler().ServeHTTP(w, req)
		if w.Code != tt.want {
			t.Errorf("%s %s as %q: %d %s, want %d", tt.method, tt.path, tt.ct, w.Code, strings.TrimSpace(w.Body.String()), tt.want)
		}
	}
	res, b := h.call("GET", "/system/functions", nil)
	if res.StatusCode != http.StatusOK || strings.Contains(string(b), "evil") || !strings.Contains(string(b), "microfaas/matmul") {
		t.Errorf("functions after the refused requests: %d %s", res.StatusCode, b)
	}
}
