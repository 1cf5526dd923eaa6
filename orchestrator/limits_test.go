package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestUnknownFunctionRefusedAtSubmit: a function no image holds is refused
// at once (404), without booting a worker; names learnt from a worker's
// hello count too.
func TestUnknownFunctionRefusedAtSubmit(t *testing.T) {
	h := newHarness(t, 1, Config{Functions: []string{"float_operations"}})
	if _, err := h.orch.Submit("no_such_function", json.RawMessage(`{}`), time.Second); !errors.Is(err, ErrUnknownFunction) {
		t.Fatalf("err = %v, want ErrUnknownFunction", err)
	}
	if h.sim.PowerOns != 0 {
		t.Errorf("%d workers powered on for an unknown function", h.sim.PowerOns)
	}
	srv := httptest.NewServer(h.orch.Handler())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/invoke/no_such_function?async=true", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("HTTP %d, want 404", resp.StatusCode)
	}
	// A worker reports the built-ins in its hello: they become known.
	inv, err := h.orch.Invoke(context.Background(), "float_operations", json.RawMessage(`{"n":1}`), 5*time.Second)
	if err != nil || inv.Err != nil {
		t.Fatalf("%v %v", err, inv.Err)
	}
	if _, err := h.orch.Submit("cascading_md5", json.RawMessage(`{"data":"x","rounds":1}`), 5*time.Second); err != nil {
		t.Errorf("a function a worker reported was refused: %v", err)
	}
	if fns := h.orch.Functions(); !slices.Contains(fns, "cascading_md5") || !slices.IsSorted(fns) {
		t.Errorf("Functions() = %v, want the hello's, sorted", fns)
	}
}

// TestQueueBound: past MaxQueue waiting invocations, submits are refused
// (429 with Retry-After) and nothing more is held in memory.
func TestQueueBound(t *testing.T) {
	h := newHarness(t, 1, Config{MaxQueue: 3})
	h.sim.BootDelay = time.Hour // nothing ever runs
	for i := 0; i < 3; i++ {
		if _, err := h.orch.Submit("float_operations", json.RawMessage(`{}`), time.Second); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	if _, err := h.orch.Submit("float_operations", json.RawMessage(`{}`), time.Second); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("err = %v, want ErrQueueFull", err)
	}
	srv := httptest.NewServer(h.orch.Handler())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/invoke/float_operations?async=true", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("HTTP %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestRequestLimits: timeouts beyond the cap, overflowing timeouts and
// oversized bodies are refused before anything is queued.
func TestRequestLimits(t *testing.T) {
	h := newHarness(t, 1, Config{MaxTimeout: time.Minute})
	if _, err := h.orch.Submit("float_operations", json.RawMessage(`{}`), 2*time.Minute); !errors.Is(err, ErrBadTimeout) {
		t.Errorf("a 2 min timeout with a 1 min cap: %v", err)
	}
	srv := httptest.NewServer(h.orch.Handler())
	defer srv.Close()
	tests := []struct {
		name, query, body string
		want              int
	}{
		{"over the cap", "?timeout=2m&async=true", "{}", http.StatusBadRequest},
		{"overflowing", "?timeout=99999999999h&async=true", "{}", http.StatusBadRequest},
		{"negative", "?timeout=-1s&async=true", "{}", http.StatusBadRequest},
		{"oversized body", "?async=true", `"` + strings.Repeat("x", maxBody) + `"`, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		resp, err := http.Post(srv.URL+"/invoke/float_operations"+tt.query, "application/json", strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: HTTP %d, want %d", tt.name, resp.StatusCode, tt.want)
		}
	}
	if st := h.orch.Status(); h.sim.PowerOns != 0 {
		t.Errorf("refused requests powered on %d workers (%+v)", h.sim.PowerOns, st)
	}
}
