package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/httpguard"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// TestFetchStatusText: a status served over HTTP comes back whole and
// prints one row per worker and only the first line of a failure.
func TestFetchStatusText(t *testing.T) {
	at := time.Date(2026, 12, 3, 22, 0, 0, 0, time.UTC)
	want := Status{Workers: []WorkerStatus{{ID: "vm0", Kind: "vm", State: state.Idle, For: 61500 * time.Millisecond}},
		QueueDepth: 2, Running: 1,
		RecentFailures: []Failure{{ID: "inv-7", Function: "matmul", Worker: "vm0", Attempts: 3, Error: "worker died\ntrace...", At: at}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(want)
	}))
	defer srv.Close()
	api, err := httpguard.NewEndpoint(srv.URL, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := FetchStatus(context.Background(), srv.Client(), api)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	s.WriteText(&out)
	for _, line := range []string{
		"vm0     vm    idle   1m2s",
		"queue depth 2, running 1",
		"  2026-12-03T22:00:00Z inv-7 matmul on vm0 (attempts 3): worker died\n",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("no %q in:\n%s", line, out.String())
		}
	}
	if strings.Contains(out.String(), "trace...") {
		t.Errorf("a failure's later lines printed:\n%s", out.String())
	}
}
