package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestGreet(t *testing.T) {
	tests := []struct {
		target  string
		status  int
		body    string
		greeted string
	}{
		{"/hello?name=ada", 200, "hello, ada\n", "ada"},
		{"/hello", 200, "hello, world\n", "world"},
		{"/", 404, "no such path: try /hello?name=you\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			rec := httptest.NewRecorder()
			greet(rec, httptest.NewRequest(http.MethodGet, tt.target, nil))
			body, _ := io.ReadAll(rec.Result().Body)
			if rec.Code != tt.status || string(body) != tt.body || rec.Header().Get("X-Greeted") != tt.greeted {
				t.Errorf("%s: %d %q X-Greeted=%q, want %d %q %q", tt.target, rec.Code, body, rec.Header().Get("X-Greeted"), tt.status, tt.body, tt.greeted)
			}
		})
	}
}
