package orchestrator_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/e2e/qemutest"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/httpguard"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/workerlog"
)

// TestQEMUWorkerLogShipped boots one real x86 worker, runs a job on it, and
// reads that boot's log through the API the invocation links: the kernel's
// own boot log (its first line, "Linux version", which the console's quiet
// kernel never prints), mfinit's lines, and the console mforch captured.
func TestQEMUWorkerLogShipped(t *testing.T) {
	book, err := workerlog.Open(filepath.Join(t.TempDir(), "boots"), workerlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := qemutest.Start(t, qemutest.Options{Workers: 1, Worker: qemuWorker(t),
		QEMU: power.QEMUConfig{Console: book.Console}, Config: orchestrator.Config{WorkerLogs: book}})
	inv := c.Invoke(t, orchestrator.JobSpec{Function: "cascading_md5", Args: json.RawMessage(`{"data":"logs","rounds":3}`), Timeout: time.Minute})
	if inv.Err != nil || inv.Worker != "vm0" || inv.LogBoot != 1 {
		t.Fatalf("invocation: err %v, worker %q, log boot %d; want boot 1 of vm0", inv.Err, inv.Worker, inv.LogBoot)
	}
	api := c.Orch.Handler()
	get := func(path string) (int, []byte) {
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.Bytes()
	}
	var resp orchestrator.InvokeResponse
	if code, body := get("/invocations/" + inv.ID); code != 200 || json.Unmarshal(body, &resp) != nil || resp.WorkerLog == nil {
		t.Fatalf("GET /invocations/%s: %d %s: no worker_log", inv.ID, code, body)
	}
	// The worker flushes its log as it powers off: wait for mfinit's
	// line of the job, as shipped (the console has it too).
	shipped := func(text string) bool {
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, "mfinit | ") && strings.Contains(l, "msg=\"job done\" invocation="+inv.ID) {
				return true
			}
		}
		return false
	}
	var ch workerlog.Chunk
	deadline := time.Now().Add(time.Minute)
	for {
		code, body := get(resp.WorkerLog.Path)
		if code == 200 && json.Unmarshal(body, &ch) == nil && shipped(ch.Text) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d, text:\n%s", resp.WorkerLog.Path, code, ch.Text)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, want := range []string{"kernel | [    0.000000] Linux version ", "mfinit | ", "msg=\"connected to the orchestrator\"",
		"console | MFINIT-START"} {
		if !strings.Contains(ch.Text, want) {
			t.Errorf("boot 1's log lacks %q:\n%s", want, ch.Text)
		}
	}
	if testing.Verbose() {
		t.Logf("boot log:\n%s", ch.Text)
	}
	n := strings.Count(ch.Text, "\nkernel | ")
	t.Logf("boot %d of %s: %d bytes, %d kernel lines, %d mfinit lines, %d console lines", ch.Boot, ch.Worker, len(ch.Text), n,
		strings.Count(ch.Text, "\nmfinit | "), strings.Count(ch.Text, "console | "))
	if strings.Contains(ch.Text, "lines dropped") {
		t.Errorf("a quiet boot's log should fit the worker's buffer and burst:\n%s", ch.Text)
	}
	// As mforch logs --invocation ID reads it: over HTTP, through the
	// guard mforch serve puts on every route, with and without credentials.
	srv := httptest.NewServer(httpguard.Wrap(api, httpguard.Config{Open: []string{"/healthz"}, User: "admin", Password: "qemu-test-pw-0123"}))
	defer srv.Close()
	for _, creds := range []string{"admin:qemu-test-pw-0123@", ""} {
		ep, err := httpguard.NewEndpoint(strings.Replace(srv.URL, "http://", "http://"+creds, 1), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		got, err := orchestrator.FetchLogs(context.Background(), srv.Client(), ep, orchestrator.LogQuery{Invocation: inv.ID})
		if creds == "" {
			if err == nil || !strings.Contains(err.Error(), "401") {
				t.Errorf("without credentials: %v, want 401", err)
			}
			continue
		}
		if err != nil || got.Boot != 1 || !strings.Contains(got.Text, "Linux version") {
			t.Errorf("FetchLogs: %v, boot %d", err, got.Boot)
		}
	}
}

// TestQEMUBootWithoutSessionKeepsConsole: a boot that never connects (here
// its kernel finds no init and panics) has no shipped log, but its boot's
// log still shows the console mforch captured: why it never came.
func TestQEMUBootWithoutSessionKeepsConsole(t *testing.T) {
	book, err := workerlog.Open(filepath.Join(t.TempDir(), "boots"), workerlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := qemutest.Start(t, qemutest.Options{Workers: 1, Worker: qemuWorker(t),
		QEMU:   power.QEMUConfig{Console: book.Console, Cmdline: "rdinit=/nonexistent"},
		Config: orchestrator.Config{WorkerLogs: book, MaxAttempts: 1, MaxBootFailures: 1}})
	inv := c.Invoke(t, orchestrator.JobSpec{Function: "cascading_md5", Args: json.RawMessage(`{"data":"x","rounds":1}`), Timeout: time.Minute})
	if inv.Err == nil || inv.LogBoot != 0 {
		t.Fatalf("invocation on a worker that cannot boot: err %v, log boot %d", inv.Err, inv.LogBoot)
	}
	ch, err := book.Read("vm0", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Boot != 1 || !strings.Contains(ch.Text, "console | ") || !strings.Contains(ch.Text, "No working init found") ||
		strings.Contains(ch.Text, "kernel | ") || strings.Contains(ch.Text, "mfinit | ") {
		t.Errorf("boot %d of a worker that never connected:\n%s", ch.Boot, ch.Text)
	}
}
