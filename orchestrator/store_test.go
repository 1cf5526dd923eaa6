package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/simworker"
)

// start runs an orchestrator over store with simulated workers that take
// bootDelay to come up.
func start(t *testing.T, cl *cluster.Cluster, store Store, bootDelay time.Duration) (*Orchestrator, *simworker.Controller) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sim := &simworker.Controller{Orch: ln.Addr().String(), Secret: cl.SecretBytes(), BootDelay: bootDelay}
	o, err := New(Config{Cluster: cl, Controllers: map[string]power.Controller{cluster.KindVM: sim}, Store: store,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	go o.Serve(ln)
	t.Cleanup(func() { o.Close(); ln.Close(); sim.Wait() })
	return o, sim
}

// TestQueueSurvivesRestart accepts invocations, stops the orchestrator
// before any worker has booted, and starts a new one on the same store: every
// accepted invocation runs exactly once, flagged as having survived a restart.
func TestQueueSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	cl := cluster.Local(2)
	store, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	o1, _ := start(t, cl, store, time.Hour) // workers never come up
	var ids []string
	for i := 0; i < 5; i++ {
		inv, err := o1.Submit("cascading_sha256", json.RawMessage(fmt.Sprintf(`{"data":"r%d","rounds":2}`, i)), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, inv.ID)
	}
	o1.Close()
	store.Close()

	store, err = OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	pending, _ := store.Pending()
	if len(pending) != 5 {
		t.Fatalf("%d pending after the first run, want 5", len(pending))
	}
	o2, _ := start(t, cl, store, 0)
	for i, id := range ids {
		inv, ok := o2.Lookup(id)
		if !ok {
			t.Fatalf("invocation %s lost across the restart", id)
		}
		select {
		case <-inv.Done():
		case <-time.After(20 * time.Second):
			t.Fatalf("recovered invocation %s never finished", id)
		}
		var got string
		json.Unmarshal(inv.Result, &got)
		if want := sha(fmt.Sprintf("r%d", i), 2); got != want || inv.Err != nil {
			t.Errorf("invocation %d: %q %q, want %q", i, got, inv.Err, want)
		}
		if inv.Restarts != 1 || inv.Attempts != 1 {
			t.Errorf("invocation %d: restarts %d attempts %d, want 1 and 1", i, inv.Restarts, inv.Attempts)
		}
	}
	if pending, _ := store.Pending(); len(pending) != 0 {
		t.Errorf("%d still pending after they all ran", len(pending))
	}
	if inv, ok, _ := store.Get(ids[0]); !ok || inv.Result == nil {
		t.Errorf("finished invocation not in the store: %v", inv)
	}
}

func TestStoreIsExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := OpenBoltStore(path); err == nil || !strings.Contains(err.Error(), "in use by another mforch") {
		t.Fatalf("second open: %v", err)
	}
}

// TestHTTPAPIAndMetrics drives the HTTP API (sync, async, lookup, errors)
// and reads the Prometheus metrics it produced.
func TestHTTPAPIAndMetrics(t *testing.T) {
	h := newHarness(t, 2, Config{})
	srv := httptest.NewServer(h.orch.Handler())
	defer srv.Close()

	post := func(path, body string) (int, InvokeResponse) {
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r InvokeResponse
		b, _ := io.ReadAll(resp.Body)
		json.Unmarshal(b, &r)
		return resp.StatusCode, r
	}
	code, r := post("/invoke/cascading_md5", `{"data":"abc","rounds":1}`)
	if code != 200 || string(r.Result) != `"900150983cd24fb0d6963f7d28e17f72"` {
		t.Fatalf("sync invoke: %d %+v", code, r)
	}
	code, r = post("/invoke/matmul", `{"A":[[1]],"B":[[1,2]]}`)
	if code != 500 || r.Error == "" {
		t.Fatalf("bad arguments: %d %+v", code, r)
	}
	if code, _ := post("/invoke/cascading_md5", `not json`); code != 400 {
		t.Fatalf("non-JSON body: %d", code)
	}
	code, r = post("/invoke/float_operations?async=true", `{"n":10}`)
	if code != 202 || r.ID == "" {
		t.Fatalf("async invoke: %d %+v", code, r)
	}
	inv, ok := h.orch.Lookup(r.ID)
	if !ok {
		t.Fatalf("async invocation %s unknown", r.ID)
	}
	select {
	case <-inv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("async invocation never finished")
	}
	resp, err := http.Get(srv.URL + "/invocations/" + r.ID)
	if err != nil {
		t.Fatal(err)
	}
	var got InvokeResponse
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != 200 || got.Status != "finished" || got.Error != "" {
		t.Fatalf("async result: %d %+v", resp.StatusCode, got)
	}
	if resp, _ := http.Get(srv.URL + "/invocations/nope"); resp.StatusCode != 404 {
		t.Fatalf("unknown id: %d", resp.StatusCode)
	}
	resp, err = http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`microfaas_invocations_total{function="cascading_md5",outcome="ok"} 1`,
		`microfaas_invocations_total{function="matmul",outcome="error"} 1`,
		`microfaas_invocations_total{function="float_operations",outcome="ok"} 1`,
		`microfaas_queue_depth 0`,
		`microfaas_workers{state="off"}`,
		`microfaas_worker_boot_seconds_count 3`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	_ = context.Background
}

// TestStoreReadsOlderRecords opens a database written before outcomes were
// typed (an error string, no kind) and reads its invocations back.
func TestStoreReadsOlderRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := map[string]map[string]string{
		"pending": {"p1": `{"id":"p1","function":"f","args":{"n":1},"timeout_ns":5000000000,"attempts":1,"queued":"2026-01-01T00:00:00Z","started":"2026-01-01T00:00:01Z"}`},
		"finished": {
			"f1": `{"id":"f1","function":"f","timeout_ns":1,"attempts":1,"queued":"2026-01-01T00:00:00Z","finished":"2026-01-01T00:00:02Z","error":"boom"}`,
			"f2": `{"id":"f2","function":"f","timeout_ns":1,"attempts":1,"queued":"2026-01-01T00:00:00Z","finished":"2026-01-01T00:00:02Z","error":"job f2 timed out","timed_out":true}`,
		},
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for bucket, recs := range old {
			b, err := tx.CreateBucket([]byte(bucket))
			if err != nil {
				return err
			}
			for k, v := range recs {
				if err := b.Put([]byte(k), []byte(v)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pending, err := s.Pending()
	if err != nil || len(pending) != 1 || pending[0].ID != "p1" || pending[0].Attempts != 1 || pending[0].Timeout != 5*time.Second {
		t.Fatalf("pending: %v %+v", err, pending)
	}
	for id, kind := range map[string]error{"f1": ErrFunction, "f2": ErrTimeout} {
		inv, ok, err := s.Get(id)
		if err != nil || !ok {
			t.Fatalf("%s: %v %v", id, ok, err)
		}
		if !errors.Is(inv.Err, kind) || inv.Err.Error() != map[string]string{"f1": "boom", "f2": "job f2 timed out"}[id] {
			t.Errorf("%s: err %v, want kind %v", id, inv.Err, kind)
		}
		select {
		case <-inv.Done():
		default:
			t.Errorf("%s: a finished record's Done is open", id)
		}
	}
	// A typed outcome round-trips.
	inv := &Invocation{ID: "n1", Function: "f", Queued: time.Now(), Finished: time.Now(), Err: newError(ErrWorkerLost, "lost")}
	if err := s.Commit([]StoreWrite{{Invocation: inv, Finished: true}}); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Get("n1"); !errors.Is(got.Err, ErrWorkerLost) || got.Err.Error() != "lost" {
		t.Errorf("round trip: %v", got.Err)
	}
}
