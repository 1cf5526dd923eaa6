package orchestrator

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/httpguard"
	"github.com/microfaas/microfaas/orchestrator/workerlog"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/runtime/shiplog"
)

// TestWorkerLogsLinkedFromInvocation: in-process workers ship their log
// after the hello; mforch files it under the worker's boot, the invocation
// links that boot, and the API serves it (behind the same credentials as
// every other route).
func TestWorkerLogsLinkedFromInvocation(t *testing.T) {
	book, err := workerlog.Open(filepath.Join(t.TempDir(), "boots"), workerlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, 1, Config{WorkerLogs: book})
	h.sim.Logs = func(id string) *shiplog.Ring {
		r := shiplog.NewRing(0, 0)
		r.Add(protocol.LogLine{Source: protocol.LogKernel, Text: "[    0.000000] Linux version 6.1.0 " + id})
		r.Add(protocol.LogLine{Source: protocol.LogMfinit, Text: "level=INFO msg=\"boot step\" step=network"})
		return r
	}
	inv, err := h.orch.Submit("cascading_sha256", json.RawMessage(`{"data":"x","rounds":1}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-inv.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("invocation did not finish")
	}
	if inv.Err != nil || inv.LogBoot != 1 || inv.Worker != "vm0" {
		t.Fatalf("invocation: err %v, worker %s, log boot %d; want boot 1 of vm0", inv.Err, inv.Worker, inv.LogBoot)
	}
	api := h.orch.Handler()
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	var resp InvokeResponse
	if code, body := get("/invocations/" + inv.ID); code != 200 || json.Unmarshal([]byte(body), &resp) != nil ||
		resp.WorkerLog == nil || resp.WorkerLog.Path != "/workers/vm0/logs?boot=1" {
		t.Fatalf("GET /invocations/%s: %d %s: want worker_log linking /workers/vm0/logs?boot=1", inv.ID, code, body)
	}
	// The shipper runs beside the job: its lines may land just after the result.
	var c workerlog.Chunk
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get("/invocations/" + inv.ID + "/logs")
		if code == 200 && json.Unmarshal([]byte(body), &c) == nil && strings.Contains(c.Text, "mfinit |") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /invocations/%s/logs: %d %s", inv.ID, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c.Worker != "vm0" || c.Boot != 1 || !strings.Contains(c.Text, "kernel | [    0.000000] Linux version 6.1.0 vm0\n") {
		t.Errorf("chunk %+v", c)
	}
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/workers/vm0/logs?boot=1", 200},
		{"/workers/vm0/logs?boot=7", 404},
		{"/workers/vm0/logs?boot=-1", 400},
		{"/workers/nobody/logs", 404},
		{"/workers/.../logs", 400},
		{"/invocations/nope/logs", 404},
	} {
		if code, body := get(tc.path); code != tc.code {
			t.Errorf("GET %s: %d %s, want %d", tc.path, code, body, tc.code)
		}
	}
	// As mforch serve wires it (lab/rig.Serve): the logs need credentials.
	guarded := httpguard.Wrap(api, httpguard.Config{Open: []string{"/healthz"}, User: "admin", Password: "pw-0123456789"})
	for _, auth := range []bool{false, true} {
		req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8080/workers/vm0/logs", nil)
		if auth {
			req.SetBasicAuth("admin", "pw-0123456789")
		}
		rec := httptest.NewRecorder()
		guarded.ServeHTTP(rec, req)
		if want := map[bool]int{false: 401, true: 200}[auth]; rec.Code != want {
			t.Errorf("credentials %v: %d, want %d", auth, rec.Code, want)
		}
	}
}

// TestStoreKeepsLogLink: an invocation read back from the store still links
// its boot's log (GET /invocations/{id} after a restart).
func TestStoreKeepsLogLink(t *testing.T) {
	s, err := OpenBoltStore(filepath.Join(t.TempDir(), "queue.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	inv := &Invocation{ID: "n1", Function: "f", Worker: "bbb3", LogBoot: 7, Queued: time.Now(), Finished: time.Now()}
	if err := s.Commit([]StoreWrite{{Invocation: inv, Finished: true}}); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Get("n1")
	if err != nil || !ok || got.LogBoot != 7 {
		t.Fatalf("read back: %v %v, log boot %d", ok, err, got.LogBoot)
	}
	if l := Response(got).WorkerLog; l == nil || *l != (LogLink{Worker: "bbb3", Boot: 7, Path: "/workers/bbb3/logs?boot=7"}) {
		t.Errorf("worker_log %+v", l)
	}
}

// TestOversizedLogFrameCutsWorkerOff: a worker whose log frame is over the
// bounds (a compromised one, flooding mforch) is cut off like any worker
// that speaks wrongly, and nothing of the frame is kept.
func TestOversizedLogFrameCutsWorkerOff(t *testing.T) {
	book, err := workerlog.Open(filepath.Join(t.TempDir(), "boots"), workerlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	big := protocol.LogBatch{}
	for range protocol.MaxLogBatch/protocol.MaxLogLine + 1 {
		big.Lines = append(big.Lines, protocol.LogLine{Source: protocol.LogKernel, Text: strings.Repeat("x", protocol.MaxLogLine)})
	}
	o, _, logs := startScripted(t, Config{WorkerLogs: book, MaxAttempts: 1}, func(pc *protocol.Conn, job protocol.Job) protocol.Result {
		if !pc.Accepts(protocol.FeatureLog) {
			t.Error("mforch with worker logs did not offer log frames")
		}
		pc.Send(protocol.TypeLog, big)
		return protocol.Result{Result: json.RawMessage(`"late"`)}
	})
	inv, err := o.Submit("anything", json.RawMessage(`{}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-inv.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("invocation did not finish")
	}
	if inv.Err == nil || !strings.Contains(logs.String(), "log frame over its bounds") {
		t.Errorf("invocation err %v; log:\n%s", inv.Err, logs.String())
	}
	if c, err := book.Read("vm0", 0, 0); err == nil && strings.Contains(c.Text, "xxxx") {
		t.Errorf("the oversized frame was kept: %d bytes", len(c.Text))
	}
}
