package orchestrator

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/testlog"
	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/simworker"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/runtime"
	"github.com/microfaas/microfaas/runtime/functions"
)

// hangStarted is signalled when test_hang starts, so a test can kill the
// worker mid-job.
var hangStarted = make(chan string, 16)

func init() {
	// test_hang blocks until its deadline: a job a worker dies in.
	functions.Register("test_hang", func(ctx context.Context, _ functions.Env, _ json.RawMessage) (any, error) {
		hangStarted <- "started"
		<-ctx.Done()
		return nil, ctx.Err()
	})
}

type harness struct {
	orch *Orchestrator
	sim  *simworker.Controller
	logs *testlog.Buffer
}

func newHarness(t testing.TB, workers int, cfg Config) *harness {
	t.Helper()
	cl := cluster.Local(workers)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sim := &simworker.Controller{Orch: ln.Addr().String(), Secret: cl.SecretBytes(), SecretFor: map[string][]byte{}}
	logs := &testlog.Buffer{}
	cfg.Cluster = cl
	cfg.Controllers = map[string]power.Controller{cluster.KindVM: sim}
	cfg.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go o.Serve(ln)
	t.Cleanup(func() {
		o.Close()
		ln.Close()
		sim.Wait()
	})
	return &harness{orch: o, sim: sim, logs: logs}
}

func sha(data string, rounds int) string {
	d := []byte(data)
	for i := 0; i < rounds; i++ {
		s := sha256.Sum256(d)
		d = s[:]
	}
	return hex.EncodeToString(d)
}

func TestBurstLargerThanCluster(t *testing.T) {
	h := newHarness(t, 3, Config{})
	const n = 20
	var invs []*Invocation
	for i := 0; i < n; i++ {
		args := fmt.Sprintf(`{"data":"job-%d","rounds":%d}`, i, i+1)
		inv, err := h.orch.Submit("cascading_sha256", json.RawMessage(args), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		invs = append(invs, inv)
	}
	for i, inv := range invs {
		select {
		case <-inv.Done():
		case <-time.After(30 * time.Second):
			t.Fatalf("invocation %d never finished; status %+v", i, h.orch.Status())
		}
		var got string
		if inv.Err != nil || json.Unmarshal(inv.Result, &got) != nil {
			t.Fatalf("invocation %d: err %q result %s", i, inv.Err, inv.Result)
		}
		if want := sha(fmt.Sprintf("job-%d", i), i+1); got != want {
			t.Errorf("invocation %d: digest %s, want %s", i, got, want)
		}
		if inv.Attempts != 1 {
			t.Errorf("invocation %d ran %d times", i, inv.Attempts)
		}
	}
	// With IdleTimeout 0 every job gets a fresh boot.
	if h.sim.PowerOns < n {
		t.Errorf("%d power-ons for %d jobs; each job should get a fresh worker", h.sim.PowerOns, n)
	}
}

func TestWorkerDiesMidJobIsRetried(t *testing.T) {
	h := newHarness(t, 2, Config{MaxAttempts: 2})
	inv, err := h.orch.Submit("test_hang", nil, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	<-hangStarted
	// Pull the plug on whichever worker runs it.
	var victim string
	for _, w := range h.orch.Status().Workers {
		if w.State == state.Working {
			victim = w.ID
		}
	}
	if victim == "" {
		t.Fatalf("no worker working: %+v", h.orch.Status())
	}
	h.sim.PowerOff(context.Background(), cluster.Worker{ID: victim})
	<-hangStarted // the retry started on a worker
	select {
	case <-inv.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("retried invocation never finished")
	}
	if inv.Attempts != 2 {
		t.Errorf("attempts = %d, want 2", inv.Attempts)
	}
	if !inv.TimedOut || !errors.Is(inv.Err, ErrTimeout) {
		t.Log(h.logs.String())
		t.Errorf("second attempt should time out at its deadline: err %q timedOut %v", inv.Err, inv.TimedOut)
	}
	if !strings.Contains(h.logs.String(), "invocation lost its worker") {
		t.Error("the lost job was not logged")
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	h := newHarness(t, 1, Config{MaxAttempts: 1})
	inv, _ := h.orch.Submit("test_hang", nil, 10*time.Second)
	<-hangStarted
	h.sim.PowerOff(context.Background(), cluster.Worker{ID: "vm0"})
	select {
	case <-inv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("invocation never failed")
	}
	if !errors.Is(inv.Err, ErrWorkerLost) || inv.Attempts != 1 {
		t.Fatalf("err = %v after %d attempts, want ErrWorkerLost after 1", inv.Err, inv.Attempts)
	}
	if got := HTTPStatus(inv.Err); got != http.StatusServiceUnavailable {
		t.Errorf("HTTP status %d, want 503", got)
	}
}

func TestWrongSecretIsRefused(t *testing.T) {
	h := newHarness(t, 2, Config{PowerUpTimeout: 2 * time.Second, MaxBootFailures: 1})
	h.sim.SecretFor["vm0"] = []byte("not the cluster's secret")
	inv, err := h.orch.Invoke(context.Background(), "cascading_sha256", json.RawMessage(`{"data":"a","rounds":1}`), 5*time.Second)
	if err != nil || inv.Err != nil {
		t.Fatalf("invocation: %v %v", err, inv.Err)
	}
	if inv.Worker != "vm1" {
		t.Errorf("ran on %s; only vm1 holds the secret", inv.Worker)
	}
	h.logs.WaitFor(t, "refused worker connection", 10*time.Second)
	if !strings.Contains(h.logs.String(), protocol.ErrBadMAC.Error()) {
		t.Errorf("refusal does not say why:\n%s", h.logs.String())
	}
}

func TestUnknownWorkerTurnedAway(t *testing.T) {
	h := newHarness(t, 1, Config{})
	// A worker not in the inventory, with a key derived the right way for
	// its id, dials in by itself.
	addr := h.sim.Orch
	key, _ := protocol.WorkerKey(h.orch.cfg.Cluster.SecretBytes(), "intruder")
	w := &runtime.Worker{Config: runtime.Config{ID: "intruder", Orch: addr, Failsafe: 5 * time.Second}, Key: key,
		Log: slog.Default(), Clock: func() float64 { return 0 }}
	out := w.Run(context.Background())
	if out.Action != protocol.CmdPowerOff {
		t.Fatalf("unknown worker told %q, want poweroff", out.Action)
	}
	h.logs.WaitFor(t, "refused worker connection", 10*time.Second)
	if !strings.Contains(h.logs.String(), protocol.ErrUnknownWorker.Error()) {
		t.Error("refusal reason not logged")
	}
}

// TestWorkerRefusesJobWithWrongKey: an impostor orchestrator (it does not
// hold the worker's key) answers the hello with a job; the worker powers
// off without running it.
func TestWorkerRefusesJobWithWrongKey(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// It speaks the framing, but can only guess the MAC.
		fmt.Fprintf(c, `{"type":"challenge","seq":0,"body":{"proto":%d,"nonce":"%s"},"mac":""}`+"\n",
			protocol.Version, strings.Repeat("ab", 16))
		bufio.NewReader(c).ReadString('\n') // the hello
		fmt.Fprintf(c, `{"type":"job","seq":0,"body":{"i_id":"evil","f_id":"cascading_sha256"},"mac":"%s"}`+"\n",
			strings.Repeat("00", 32))
		io.Copy(io.Discard, c) // until the worker hangs up
	}()
	key, _ := protocol.WorkerKey([]byte("the-real-secret!"), "vm0")
	w := &runtime.Worker{Config: runtime.Config{ID: "vm0", Orch: ln.Addr().String(), Failsafe: 5 * time.Second}, Key: key,
		Log: slog.Default(), Clock: func() float64 { return 0 }}
	out := w.Run(context.Background())
	if out.Action != protocol.CmdPowerOff || !strings.Contains(out.Reason, protocol.ErrBadMAC.Error()) {
		t.Fatalf("outcome = %+v, want a power-off for a bad MAC", out)
	}
}

func TestKeepsWorkerUpWithIdleTimeout(t *testing.T) {
	h := newHarness(t, 1, Config{IdleTimeout: time.Minute})
	for i := 0; i < 5; i++ {
		inv, err := h.orch.Invoke(context.Background(), "float_operations", json.RawMessage(`{"n":100}`), 5*time.Second)
		if err != nil || inv.Err != nil {
			t.Fatalf("invocation %d: %v %v", i, err, inv.Err)
		}
	}
	if h.sim.PowerOns != 1 {
		t.Errorf("%d power-ons; a warm worker should serve all 5 jobs", h.sim.PowerOns)
	}
}

func TestWithdrawOnCancel(t *testing.T) {
	h := newHarness(t, 1, Config{})
	h.sim.BootDelay = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	inv, err := h.orch.Invoke(ctx, "float_operations", json.RawMessage(`{"n":1}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(inv.Err, ErrUnavailable) || inv.Attempts != 0 {
		t.Fatalf("err = %v after %d attempts, want ErrUnavailable before any attempt", inv.Err, inv.Attempts)
	}
}

// TestIdleTimeoutOnFakeClock runs the real loop, connections and workers
// on a fake clock: a warm worker stays up until the clock passes
// IdleTimeout, then powers off; the observer sees every change.
func TestIdleTimeoutOnFakeClock(t *testing.T) {
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	changes := make(chan state.Change, 64)
	h := newHarness(t, 1, Config{Clock: fake, IdleTimeout: time.Minute, OnStateChange: func(c state.Change) { changes <- c }})
	inv, err := h.orch.Invoke(context.Background(), "float_operations", json.RawMessage(`{"n":10}`), 5*time.Second)
	if err != nil || inv.Err != nil {
		t.Fatalf("invocation: %v %v", err, inv.Err)
	}
	want := func(to state.Name) state.Change {
		t.Helper()
		select {
		case c := <-changes:
			if c.To != to || c.Worker != "vm0" {
				t.Fatalf("state change %+v, want vm0 to %s", c, to)
			}
			return c
		case <-time.After(10 * time.Second):
			t.Fatalf("no change to %s", to)
		}
		return state.Change{}
	}
	want(state.Booting)
	want(state.Idle)
	if c := want(state.Working); c.Invocation != inv.ID || !c.At.Equal(fake.Now()) {
		t.Fatalf("working: %+v", c)
	}
	want(state.Idle)
	fake.Advance(59 * time.Second)
	if s := h.orch.Status().Workers[0].State; s != state.Idle {
		t.Fatalf("after 59 s of a 1 min idle timeout the worker is %s", s)
	}
	fake.Advance(time.Second)
	want(state.Stopping)
	want(state.Off) // the worker obeys the power-off; its controller reports the exit
}
