package orchestrator

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/protocol"
)

// The state machine's tests feed it events and check the states and
// actions that result: no goroutines, no sockets, no clock. Each test names
// the transition of docs/orchestrator.md it covers.

type mtest struct {
	t    *testing.T
	m    *machine
	now  time.Time
	acts []action // of the last event
	all  []action // since the start
}

func newMT(t *testing.T, workers int, tweak func(*machineConfig)) *mtest {
	cfg := machineConfig{MaxBooting: workers, MaxAttempts: 3, MaxBootFailures: 3,
		PowerUpTimeout: time.Minute, JobTimeout: time.Minute, PowerOffHoldoff: 10 * time.Second,
		FirstIdle: 2 * time.Second, JobGrace: 15 * time.Second, ReportsExit: map[string]bool{cluster.KindVM: true}}
	if tweak != nil {
		tweak(&cfg)
	}
	var ws []cluster.Worker
	for i := 0; i < workers; i++ {
		ws = append(ws, cluster.Worker{ID: fmt.Sprintf("w%d", i), Kind: cluster.KindVM})
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &mtest{t: t, m: newMachine(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ws, now), now: now}
}

// ev handles one event after d has passed.
func (x *mtest) ev(d time.Duration, e any) []action {
	x.t.Helper()
	x.now = x.now.Add(d)
	x.m.turn++
	x.m.handle(e, x.now)
	x.acts = x.m.take()
	x.all = append(x.all, x.acts...)
	return x.acts
}

func (x *mtest) state(id string) state.Name { return x.m.workers[id].state }

func (x *mtest) wantState(id string, s state.Name) {
	x.t.Helper()
	if got := x.state(id); got != s {
		x.t.Fatalf("worker %s is %s, want %s (actions %#v)", id, got, s, x.acts)
	}
}

func (x *mtest) session(id string) uint64 { return x.m.workers[id].session }

// submit queues an invocation (no Store) and returns it.
func (x *mtest) submit(timeout time.Duration) *Invocation {
	x.t.Helper()
	inv := &Invocation{ID: fmt.Sprintf("inv%d", len(x.m.live)+len(x.m.recent)), Function: "f", Timeout: timeout,
		Queued: x.now, done: make(chan struct{})}
	x.ev(0, evSubmit{inv, make(chan error, 1)})
	return inv
}

// boot powers w on (already booting) through its hello.
func (x *mtest) hello(id string) *workerConn {
	x.t.Helper()
	c := &workerConn{}
	x.ev(time.Second, evHello{worker: id, conn: c, reply: make(chan helloReply, 1)})
	return c
}

func (x *mtest) result(id string, inv *Invocation, res protocol.Result) {
	x.t.Helper()
	res.ID = inv.ID
	x.ev(100*time.Millisecond, evResult{id, x.session(id), res})
}

// lastArm is the timer the last actions armed for worker id.
func (x *mtest) lastArm(id string) actArm {
	x.t.Helper()
	for i := len(x.all) - 1; i >= 0; i-- {
		if a, ok := x.all[i].(actArm); ok && a.worker == id {
			return a
		}
	}
	x.t.Fatalf("no timer armed for %s", id)
	return actArm{}
}

// fire fires worker id's armed timer after its delay.
func (x *mtest) fire(id string) {
	x.t.Helper()
	a := x.lastArm(id)
	x.ev(a.after, evTimer{a.worker, a.session, a.timer})
}

func has[T action](acts []action, pred func(T) bool) bool {
	for _, a := range acts {
		if v, ok := a.(T); ok && (pred == nil || pred(v)) {
			return true
		}
	}
	return false
}

func sent(acts []action, what string) bool {
	return has(acts, func(s actSend) bool {
		if c, ok := s.msg.(protocol.Command); ok {
			return c.Action == what
		}
		return s.typ == what
	})
}

func isDone(inv *Invocation) bool { return !inv.Finished.IsZero() }

// off → booting → idle → working → stopping → off, with the observer's
// changes and the invocation's timeline.
func TestMachineJobOnFreshWorker(t *testing.T) {
	x := newMT(t, 2, nil)
	inv := x.submit(time.Minute)
	x.wantState("w0", state.Booting)
	x.wantState("w1", state.Off) // one job needs one worker
	if !has[actPowerOn](x.acts, nil) || !has[actReply](x.acts, nil) {
		t.Fatalf("submit: %#v", x.acts)
	}
	x.hello("w0")
	x.wantState("w0", state.Working)
	if !sent(x.acts, protocol.TypeJob) {
		t.Fatalf("no job sent: %#v", x.acts)
	}
	x.result("w0", inv, protocol.Result{Result: []byte(`1`), ExecMS: 3})
	x.wantState("w0", state.Stopping) // IdleTimeout 0: one job per boot
	if !sent(x.acts, protocol.CmdPowerOff) || !has[actDone](x.acts, nil) || inv.Err != nil {
		t.Fatalf("result: %#v err %v", x.acts, inv.Err)
	}
	if has[actRecord](x.acts, nil) {
		t.Fatal("recorded before the worker went off: the timeline is incomplete")
	}
	x.ev(time.Second, evExited{"w0", nil})
	x.wantState("w0", state.Off)
	if !has[actRecord](x.acts, func(a actRecord) bool { return a.inv == inv }) {
		t.Fatal("not recorded once off")
	}
	tl := []time.Time{inv.Queued, inv.PoweredOn, inv.Connected, inv.Started, inv.Finished, inv.PoweredOff}
	for i := 1; i < len(tl); i++ {
		if tl[i].Before(tl[i-1]) || tl[i].IsZero() {
			t.Fatalf("timeline out of order or missing at %d: %v", i, tl)
		}
	}
	var changes []string
	for _, a := range x.all {
		if c, ok := a.(actState); ok {
			changes = append(changes, fmt.Sprintf("%s:%s>%s:%s", c.change.Worker, c.change.From, c.change.To, c.change.Invocation))
		}
	}
	want := []string{"w0:off>booting:", "w0:booting>idle:", "w0:idle>working:" + inv.ID, "w0:working>stopping:", "w0:stopping>off:"}
	if fmt.Sprint(changes) != fmt.Sprint(want) {
		t.Errorf("state changes %v, want %v", changes, want)
	}
}

// MaxBooting bounds the workers booting at once.
func TestMachineMaxBooting(t *testing.T) {
	x := newMT(t, 3, func(c *machineConfig) { c.MaxBooting = 2 })
	for i := 0; i < 3; i++ {
		x.submit(time.Minute)
	}
	x.wantState("w0", state.Booting)
	x.wantState("w1", state.Booting)
	x.wantState("w2", state.Off)
}

// working → idle (IdleTimeout > 0): told to wait, the next job goes to it;
// idle → stopping after IdleTimeout.
func TestMachineWarmWorker(t *testing.T) {
	x := newMT(t, 1, func(c *machineConfig) { c.IdleTimeout = 30 * time.Second; c.FirstIdle = 30 * time.Second })
	a := x.submit(time.Minute)
	x.hello("w0")
	x.result("w0", a, protocol.Result{})
	x.wantState("w0", state.Idle)
	if !sent(x.acts, protocol.CmdWait) || !has[actRecord](x.acts, nil) {
		t.Fatalf("result on a warm worker: %#v", x.acts)
	}
	b := x.submit(time.Minute)
	x.wantState("w0", state.Working)
	x.result("w0", b, protocol.Result{})
	x.wantState("w0", state.Idle)
	if arm := x.lastArm("w0"); arm.after != 30*time.Second {
		t.Fatalf("idle timer %s, want 30s", arm.after)
	}
	x.fire("w0")
	x.wantState("w0", state.Stopping)
	if !sent(x.acts, protocol.CmdPowerOff) {
		t.Fatal("idle worker not told to power off")
	}
}

// A stale timer (armed before the worker left that state) does nothing.
func TestMachineStaleTimerIgnored(t *testing.T) {
	x := newMT(t, 1, func(c *machineConfig) { c.IdleTimeout = 30 * time.Second; c.FirstIdle = 30 * time.Second })
	a := x.submit(time.Minute)
	x.hello("w0")
	firstIdle := x.lastArm("w0") // armed at hello; superseded by the job
	x.result("w0", a, protocol.Result{})
	x.ev(0, evTimer{firstIdle.worker, firstIdle.session, firstIdle.timer - 1})
	x.wantState("w0", state.Idle)
	// An event of an older session is ignored too.
	x.ev(0, evResult{"w0", x.session("w0") - 1, protocol.Result{ID: a.ID}})
	x.wantState("w0", state.Idle)
}

// booting → stopping → off: no hello within PowerUpTimeout; after
// MaxBootFailures in a row → failed; with every worker failed, queued
// invocations fail as unavailable.
func TestMachineBootFailures(t *testing.T) {
	x := newMT(t, 1, func(c *machineConfig) { c.MaxBootFailures = 2 })
	inv := x.submit(time.Minute)
	for i := 1; i <= 2; i++ {
		x.wantState("w0", state.Booting)
		x.fire("w0")
		x.wantState("w0", state.Stopping)
		if !has[actPowerOff](x.acts, nil) {
			t.Fatal("a worker that missed its hello is not forced off")
		}
		x.ev(time.Second, evPowerOff{"w0", x.session("w0"), nil})
		if i == 1 {
			x.wantState("w0", state.Booting) // off, and powered on again for the queued job
		}
	}
	x.wantState("w0", state.Failed)
	if !errors.Is(inv.Err, ErrUnavailable) || !isDone(inv) {
		t.Fatalf("invocation with every worker failed: %v", inv.Err)
	}
}

// booting → off when the controller's PowerOn fails or the worker exits
// while booting (each a boot failure).
func TestMachinePowerOnErrorAndExitWhileBooting(t *testing.T) {
	x := newMT(t, 1, nil)
	x.submit(time.Minute)
	x.ev(0, evPowerOn{"w0", x.session("w0"), errors.New("qemu: no such file")})
	x.wantState("w0", state.Stopping)
	x.ev(0, evPowerOff{"w0", x.session("w0"), nil})
	x.wantState("w0", state.Booting) // powered on again for the job
	x.ev(0, evExited{"w0", errors.New("exit status 1")})
	if w := x.m.workers["w0"]; w.bootFailures != 2 {
		t.Fatalf("boot failures %d, want 2", w.bootFailures)
	}
	x.wantState("w0", state.Booting)
	x.hello("w0")
	if w := x.m.workers["w0"]; w.bootFailures != 0 {
		t.Fatal("a hello does not reset the boot failures")
	}
}

// A hello from a worker not in the inventory, or not booting, is turned
// away: told to power off, connection closed.
func TestMachineTurnsAwayUnexpectedHello(t *testing.T) {
	x := newMT(t, 1, nil)
	for _, id := range []string{"intruder", "w0"} { // w0 is off
		c := &workerConn{}
		x.ev(0, evHello{worker: id, conn: c, reply: make(chan helloReply, 1)})
		if !sent(x.acts, protocol.CmdPowerOff) || !has[actClose](x.acts, func(a actClose) bool { return a.conn == c }) ||
			!has[actHelloDone](x.acts, func(a actHelloDone) bool { return !a.r.ok }) {
			t.Fatalf("%s not turned away: %#v", id, x.acts)
		}
	}
	x.wantState("w0", state.Off)
}

// working → stopping → off when the connection is lost: the job is
// requeued at the front with its attempt counted, and runs again; after
// MaxAttempts it fails with ErrWorkerLost.
func TestMachineConnectionLostMidJob(t *testing.T) {
	x := newMT(t, 1, func(c *machineConfig) { c.MaxAttempts = 2 })
	inv := x.submit(time.Minute)
	for attempt := 1; attempt <= 2; attempt++ {
		x.hello("w0")
		x.wantState("w0", state.Working)
		if inv.Attempts != attempt {
			t.Fatalf("attempts %d, want %d", inv.Attempts, attempt)
		}
		x.ev(time.Second, evConnLost{"w0", x.session("w0"), io.EOF})
		x.wantState("w0", state.Stopping)
		if !has[actPowerOff](x.acts, nil) {
			t.Fatal("worker with a lost connection not forced off")
		}
		x.ev(time.Second, evPowerOff{"w0", x.session("w0"), nil})
	}
	if !errors.Is(inv.Err, ErrWorkerLost) || !isDone(inv) {
		t.Fatalf("after 2 lost attempts: %v", inv.Err)
	}
	x.wantState("w0", state.Off)
}

// From a shared queue, a job whose worker is lost mid-job is handed back
// to the queue (its redelivery counts the start), not started again on
// another worker here; on its last attempt it ends failed here as
// without a shared queue.
func TestMachineSharedLostJobGivenBack(t *testing.T) {
	for _, tc := range []struct {
		maxAttempts int
		givenBack   bool
	}{{3, true}, {1, false}} {
		x := newMT(t, 2, func(c *machineConfig) { c.Shared = true; c.MaxAttempts = tc.maxAttempts })
		inv := x.submit(time.Minute)
		x.hello("w0")
		x.hello("w1")
		x.wantState("w0", state.Working)
		acts := x.ev(time.Second, evConnLost{"w0", x.session("w0"), io.EOF})
		gave := has(acts, func(a actGiveBack) bool { return a.id == inv.ID })
		if gave != tc.givenBack || (gave && (len(x.m.queue) != 0 || x.m.live[inv.ID] != nil || isDone(inv))) {
			t.Fatalf("MaxAttempts %d: given back %v (want %v), queue %d, live %v, done %v",
				tc.maxAttempts, gave, tc.givenBack, len(x.m.queue), x.m.live[inv.ID] != nil, isDone(inv))
		}
		if x.state("w1") == state.Working {
			t.Errorf("MaxAttempts %d: started again on w1 within the same delivery", tc.maxAttempts)
		}
		if !tc.givenBack && (!errors.Is(inv.Err, ErrWorkerLost) || !isDone(inv)) {
			t.Errorf("MaxAttempts 1: %v; want ErrWorkerLost", inv.Err)
		}
	}
}

// With a Store and a worker up, an invocation accepted into a short queue
// is queued at its submit, its first attempt reserved in the accepting
// write: its job leaves before that write is committed (the caller is
// answered only after it). evAccepted does not queue it twice; a failed
// accept drops it if it has not started; an attempt after a lost worker
// waits for its own write.
func TestMachineEarlyStart(t *testing.T) {
	x := newMT(t, 1, func(c *machineConfig) { c.Durable = true; c.IdleTimeout = time.Minute; c.FirstIdle = time.Minute })
	newInv := func(id string) *Invocation {
		return &Invocation{ID: id, Timeout: time.Minute, done: make(chan struct{})}
	}
	jobFor := func(inv *Invocation, durable bool) func(actSend) bool {
		return func(s actSend) bool {
			j, ok := s.msg.(protocol.Job)
			return s.typ == protocol.TypeJob && ok && j.ID == inv.ID && s.durable == durable
		}
	}
	a := newInv("a")
	x.ev(0, evSubmit{a, make(chan error, 1)})
	if len(x.m.queue) != 0 || a.early {
		t.Fatal("queued before its write was committed with no worker up")
	}
	x.ev(0, evAccepted{a})
	x.hello("w0") // a's job: reserved now, sent after the commit
	x.ev(0, evCommitted{x.m.turn})

	b := newInv("b") // w0 is busy with a
	x.ev(0, evSubmit{b, make(chan error, 1)})
	if !b.early || len(x.m.queue) != 1 || !has[actPersist](x.acts, func(p actPersist) bool { return p.inv.ID == "b" && p.inv.Attempts == 1 }) {
		t.Fatalf("b not queued early with its attempt in the accepting write: %#v", x.acts)
	}
	if !has[actAccepted](x.acts, nil) || has[actReply](x.acts, nil) {
		t.Fatal("b answered other than after its commit")
	}
	x.result("w0", a, protocol.Result{}) // b's write is not committed yet
	if !has[actSend](x.acts, jobFor(b, false)) {
		t.Fatalf("b's job waits for the commit of its accepting write: %#v", x.acts)
	}
	x.ev(0, evCommitted{x.m.turn})
	x.ev(0, evAccepted{b})
	if len(x.m.queue) != 0 || b.early || has[actSend](x.acts, func(s actSend) bool { return s.typ == protocol.TypeJob }) {
		t.Fatalf("evAccepted queued b again: queue %d, %#v", len(x.m.queue), x.acts)
	}

	c := newInv("c") // w0 is busy with b
	x.ev(0, evSubmit{c, make(chan error, 1)})
	x.ev(0, evAcceptFailed{c})
	if len(x.m.queue) != 0 || x.m.live["c"] != nil {
		t.Fatal("an invocation whose accept failed stayed queued")
	}
	x.result("w0", b, protocol.Result{})
	if has[actSend](x.acts, func(s actSend) bool { return s.typ == protocol.TypeJob }) {
		t.Fatalf("a job was sent for c: %#v", x.acts)
	}

	d := newInv("d") // w0 idle: started at its submit, before its commit
	x.ev(0, evSubmit{d, make(chan error, 1)})
	if !has[actSend](x.acts, jobFor(d, false)) {
		t.Fatalf("d's job not sent at once: %#v", x.acts)
	}
	x.ev(time.Second, evConnLost{"w0", x.session("w0"), io.EOF})
	x.ev(time.Second, evPowerOff{"w0", x.session("w0"), nil})
	x.hello("w0")
	if d.Attempts != 2 || !has[actPersist](x.acts, func(p actPersist) bool { return p.inv.ID == "d" && p.inv.Attempts == 2 }) ||
		!has[actSend](x.acts, jobFor(d, true)) {
		t.Fatalf("d's second attempt was not written before its job: attempts %d, %#v", d.Attempts, x.acts)
	}
}

// working: the controller reports the exit, then the connection drops:
// off at once (no forced power-off), job requeued. A result that arrives
// after the exit report still counts.
func TestMachineExitWhileWorking(t *testing.T) {
	x := newMT(t, 1, nil)
	a := x.submit(time.Minute)
	x.hello("w0")
	x.ev(0, evExited{"w0", nil})
	x.wantState("w0", state.Working)
	x.ev(0, evConnLost{"w0", x.session("w0"), io.EOF})
	if has[actPowerOff](x.acts, nil) {
		t.Fatal("forced off a worker that is off")
	}
	x.wantState("w0", state.Booting) // off, and powered on again for the requeued job
	x.hello("w0")
	x.ev(0, evExited{"w0", nil})
	x.result("w0", a, protocol.Result{Result: []byte(`2`)})
	x.wantState("w0", state.Off)
	if a.Err != nil || string(a.Result) != "2" || a.Attempts != 2 {
		t.Fatalf("result after exit: %v %s attempts %d", a.Err, a.Result, a.Attempts)
	}
}

// working: no result within the job's timeout plus the grace → lost,
// forced off.
func TestMachineJobDeadline(t *testing.T) {
	x := newMT(t, 1, func(c *machineConfig) { c.MaxAttempts = 1 })
	inv := x.submit(5 * time.Second)
	x.hello("w0")
	if arm := x.lastArm("w0"); arm.after != 20*time.Second {
		t.Fatalf("job timer %s, want timeout 5s + grace 15s", arm.after)
	}
	x.fire("w0")
	x.wantState("w0", state.Stopping)
	if !errors.Is(inv.Err, ErrWorkerLost) || !has[actPowerOff](x.acts, nil) {
		t.Fatalf("deadline: %v %#v", inv.Err, x.acts)
	}
}

// stopping → off: a controller that reports exits forces a worker that did
// not go off within the holdoff; one that cannot report counts it off.
func TestMachineStoppingHoldoff(t *testing.T) {
	for _, reports := range []bool{true, false} {
		x := newMT(t, 1, func(c *machineConfig) { c.ReportsExit[cluster.KindVM] = reports })
		inv := x.submit(time.Minute)
		x.hello("w0")
		x.result("w0", inv, protocol.Result{})
		x.wantState("w0", state.Stopping)
		x.fire("w0")
		if reports {
			x.wantState("w0", state.Stopping)
			if !has[actPowerOff](x.acts, nil) {
				t.Fatal("hung worker not forced off")
			}
			x.ev(time.Second, evPowerOff{"w0", x.session("w0"), nil})
		}
		x.wantState("w0", state.Off)
		if inv.PoweredOff.IsZero() {
			t.Error("powered_off not set")
		}
	}
}

// Typed outcomes from a worker's result; a timed-out worker is rebooted
// even when workers are kept warm; a result for another invocation is a
// protocol violation.
func TestMachineResultOutcomes(t *testing.T) {
	x := newMT(t, 1, func(c *machineConfig) { c.IdleTimeout = time.Minute })
	a := x.submit(time.Minute)
	x.hello("w0")
	x.result("w0", a, protocol.Result{Error: "boom"})
	if !errors.Is(a.Err, ErrFunction) || a.Err.Error() != "boom" || HTTPStatus(a.Err) != 500 {
		t.Fatalf("function error: %v", a.Err)
	}
	b := x.submit(time.Minute)
	x.result("w0", b, protocol.Result{Error: "timed out", TimedOut: true})
	if !errors.Is(b.Err, ErrTimeout) || HTTPStatus(b.Err) != 504 {
		t.Fatalf("timeout: %v", b.Err)
	}
	x.wantState("w0", state.Stopping)
	x.ev(0, evExited{"w0", nil})
	c := x.submit(time.Minute)
	x.hello("w0")
	x.ev(0, evResult{"w0", x.session("w0"), protocol.Result{ID: "someone-else"}})
	x.wantState("w0", state.Stopping)
	if isDone(c) || c.Attempts != 1 {
		t.Fatal("a mismatched result finished the invocation")
	}
	if HTTPStatus(nil) != 200 || HTTPStatus(ErrClosed) != 503 || HTTPStatus(newError(ErrUnavailable, "x")) != 503 {
		t.Error("HTTPStatus")
	}
}

// A queued invocation the caller gives up on is withdrawn; a running one
// is not.
func TestMachineWithdraw(t *testing.T) {
	x := newMT(t, 1, nil)
	a := x.submit(time.Minute)
	x.ev(0, evWithdraw{a, errors.New("context canceled")})
	if !errors.Is(a.Err, ErrUnavailable) || a.Attempts != 0 {
		t.Fatalf("withdrawn: %v", a.Err)
	}
	b := x.submit(time.Minute)
	x.hello("w0")
	x.ev(0, evWithdraw{b, errors.New("context canceled")})
	if isDone(b) {
		t.Fatal("withdrew a running invocation")
	}
}

// Shutdown: queued invocations are released (ErrClosed without a Store),
// drained once no job runs, every worker forced off.
func TestMachineShutdown(t *testing.T) {
	x := newMT(t, 2, func(c *machineConfig) { c.MaxBooting = 1 })
	running := x.submit(time.Minute)
	queued := x.submit(time.Minute)
	x.hello("w0")
	drained := make(chan struct{})
	x.ev(0, evShutdown{drained})
	if !errors.Is(queued.Err, ErrClosed) {
		t.Fatalf("queued at shutdown: %v", queued.Err)
	}
	if has[actClosed](x.acts, nil) {
		t.Fatal("drained while a job runs")
	}
	x.ev(0, evSubmit{&Invocation{ID: "late", done: make(chan struct{})}, make(chan error, 1)})
	if !has[actReply](x.acts, func(a actReply) bool { return errors.Is(a.err, ErrClosed) }) {
		t.Fatal("submit after shutdown accepted")
	}
	x.result("w0", running, protocol.Result{})
	if !has[actClosed](x.acts, func(a actClosed) bool { return a.ch == drained }) {
		t.Fatal("not drained after the last job")
	}
	off := make(chan struct{})
	x.ev(0, evPowerOffAll{off})
	if !has[actPowerOff](x.acts, nil) {
		t.Fatal("workers not forced off")
	}
	x.ev(0, evPowerOff{"w0", x.session("w0"), nil})
	if has[actClosed](x.acts, func(a actClosed) bool { return a.ch == off }) {
		t.Fatal("reported off while w1 (booting for the queued job) is still on")
	}
	x.ev(0, evPowerOff{"w1", x.session("w1"), nil})
	if !has[actClosed](x.acts, func(a actClosed) bool { return a.ch == off }) {
		t.Fatal("not reported off")
	}
}

// With a Store: Submit is answered after the write (actAccepted); the
// invocation is queued on evAccepted; the job leaves at once when its
// attempt was reserved in a committed turn, else after the commit.
func TestMachineDurable(t *testing.T) {
	x := newMT(t, 1, func(c *machineConfig) { c.Durable = true; c.IdleTimeout = time.Minute; c.FirstIdle = time.Minute })
	a := &Invocation{ID: "a", Timeout: time.Minute, done: make(chan struct{})}
	x.ev(0, evSubmit{a, make(chan error, 1)})
	if !has[actPersist](x.acts, nil) || !has[actAccepted](x.acts, nil) || has[actPowerOn](x.acts, nil) {
		t.Fatalf("durable submit: %#v", x.acts)
	}
	x.ev(0, evAccepted{a})
	x.wantState("w0", state.Booting)
	x.hello("w0")
	// Not reserved (no worker was up): written now, sent after the commit.
	if !has[actSend](x.acts, func(s actSend) bool { return s.typ == protocol.TypeJob && s.durable }) {
		t.Fatalf("job sent before its attempt is on disk: %#v", x.acts)
	}
	// b is accepted while w0 works: its write reserves attempt 1.
	b := &Invocation{ID: "b", Timeout: time.Minute, done: make(chan struct{})}
	x.ev(0, evSubmit{b, make(chan error, 1)})
	if !has[actPersist](x.acts, func(p actPersist) bool { return p.inv.Attempts == 1 }) {
		t.Fatal("accept write does not reserve the first attempt")
	}
	x.ev(0, evCommitted{x.m.turn})
	x.ev(0, evAccepted{b})
	x.result("w0", a, protocol.Result{})
	if !has[actPersist](x.acts, func(p actPersist) bool { return p.finished && p.inv.ID == "a" }) {
		t.Fatal("finish not persisted")
	}
	if !has[actSend](x.acts, func(s actSend) bool { return s.typ == protocol.TypeJob && !s.durable }) {
		t.Fatalf("reserved job waits for a commit: %#v", x.acts)
	}
	for _, a := range x.acts {
		if _, ok := a.(actDone); ok && !durable(a) {
			t.Fatal("waiters released before the finish is on disk")
		}
	}
}

// An idle worker that runs fewer functions takes a job first: w1 (f1
// only) takes the f1, so w0 (f1 and f2) is still free for the f2 that
// comes next; in m.order w0 would have taken the f1 and the f2 waited.
func TestMachineSpecialistFirst(t *testing.T) {
	x := newMT(t, 2, func(c *machineConfig) { c.IdleTimeout = time.Hour; c.FirstIdle = time.Hour })
	submit := func(function string) *Invocation {
		inv := &Invocation{ID: fmt.Sprintf("inv%d", len(x.m.live)+len(x.m.recent)), Function: function, Timeout: time.Minute,
			Queued: x.now, done: make(chan struct{})}
		x.ev(0, evSubmit{inv, make(chan error, 1)})
		return inv
	}
	hello := func(id string, functions ...string) {
		x.ev(time.Second, evHello{worker: id, functions: functions, conn: &workerConn{}, reply: make(chan helloReply, 1)})
	}
	a, b := submit("f1"), submit("f1") // both workers power on
	hello("w0", "f1", "f2")
	hello("w1", "f1")
	x.result(a.Worker, a, protocol.Result{})
	x.result(b.Worker, b, protocol.Result{})
	x.wantState("w0", state.Idle)
	x.wantState("w1", state.Idle)
	c := submit("f1")
	d := submit("f2")
	if c.Worker != "w1" || d.Worker != "w0" {
		t.Fatalf("f1 ran on %q and f2 on %q; want w1 (f1 only) and w0; queued: %d", c.Worker, d.Worker, len(x.m.queue))
	}
}
