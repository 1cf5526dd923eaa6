package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestStatusErrorsSayWhatToDo: mforch status pointed at the wrong thing (an
// OpenFaaS gateway's 404, a 401, nothing listening) says which flag to pass
// and never shows the password given in --addr.
func TestStatusErrorsSayWhatToDo(t *testing.T) {
	gateway := httptest.NewServer(http.NotFoundHandler())
	defer gateway.Close()
	locked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "credentials required", http.StatusUnauthorized)
	}))
	defer locked.Close()
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	withPW := func(u string) string { return strings.Replace(u, "http://", "http://admin:hunter2-secret@", 1) }
	tests := []struct {
		name, addr string
		want       []string
	}{
		{"gateway's port", withPW(gateway.URL), []string{"404", "--addr", "--http"}},
		{"wrong password", withPW(locked.URL), []string{"401", "--auth DIR", "--openfaas-auth"}},
		{"nothing listening", withPW(gone.URL), []string{"is mforch serve running"}},
	}
	for _, tt := range tests {
		err := runStatus(context.Background(), []string{"--addr", tt.addr, "--auth", t.TempDir()})
		if err == nil {
			t.Fatalf("%s: no error", tt.name)
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v; want it to contain %q", tt.name, err, w)
			}
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error shows the password: %v", tt.name, err)
		}
	}
}
