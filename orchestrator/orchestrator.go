// Package orchestrator owns a MicroFaaS cluster: it keeps one queue of
// invocations, powers workers on when there is work, hands each job to a
// worker that has booted and connected, collects the result and tells the
// worker what to do next. A worker that dies mid-job has its invocation
// retried on another, up to a limit.
package orchestrator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/microfaas/microfaas/orchestrator/inventory"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/protocol"
)

// State is where a worker is in its life cycle.
type State string

// Worker states (docs/orchestrator.md draws the machine).
const (
	Off      State = "off"
	Booting  State = "booting"  // powered on, not yet connected
	Idle     State = "idle"     // connected, waiting for a job
	Working  State = "working"  // running a job
	Stopping State = "stopping" // told to power off, not yet off
	Failed   State = "failed"   // failed to boot too often; not used until reset
)

// Config tunes the orchestrator. Zero values take the defaults noted.
type Config struct {
	Cluster     *inventory.Cluster
	Controllers map[string]power.Controller // by worker kind
	// MaxBooting bounds workers booting at once (default: all).
	MaxBooting int
	// PowerUpTimeout is how long a worker may take from power-on to hello (60 s).
	PowerUpTimeout time.Duration
	// JobTimeout applies to invocations that name none (120 s).
	JobTimeout time.Duration
	// IdleTimeout is how long a connected worker waits for another job
	// before it is powered off; 0 powers it off after every job, so each
	// job runs on a freshly booted worker (the original's isolation).
	IdleTimeout time.Duration
	// PowerOffHoldoff is how long a worker told to power off is assumed to
	// take when its controller cannot report the exit (GPIO boards) (10 s).
	PowerOffHoldoff time.Duration
	// MaxAttempts bounds how often an invocation is tried (3).
	MaxAttempts int
	// MaxBootFailures marks a worker failed after this many boots in a row
	// that did not reach hello (3).
	MaxBootFailures int
	Recorder        Recorder
	// Store, if set, persists accepted invocations: Submit returns only
	// once the invocation is on disk, and New queues again whatever a
	// previous run left pending.
	Store Store
	Log   *slog.Logger
}

// Invocation is one call of a function, from queueing to its result.
type Invocation struct {
	ID        string
	Function  string
	Args      json.RawMessage
	Timeout   time.Duration
	Attempts  int
	Worker    string
	Boot      protocol.BootTimes
	Queued    time.Time
	PoweredOn time.Time // power-on of the worker that ran it (zero if it was up)
	Connected time.Time
	Started   time.Time
	Finished  time.Time
	Result    json.RawMessage
	Err       string
	TimedOut  bool
	ExecMS    float64
	// Env and Secrets go with the job to the worker (user functions'
	// environment and /var/openfaas/secrets files).
	Env     map[string]string
	Secrets map[string][]byte
	// Unavailable is set when the invocation failed for want of a worker
	// (every attempt lost its worker, or no worker can boot), not because
	// the function failed.
	Unavailable bool
	// Restarts counts mforch restarts this invocation survived while
	// pending; with a non-zero Started before a restart it may have run
	// partly, and Attempts says so.
	Restarts int

	done chan struct{}
}

// Done is closed when the invocation has finished, with a result or an error.
func (inv *Invocation) Done() <-chan struct{} { return inv.done }

type worker struct {
	spec         inventory.Worker
	state        State
	since        time.Time
	session      uint64 // counts power-ons; stale events of older sessions are ignored
	poweredOn    time.Time
	connected    time.Time
	boot         protocol.BootTimes
	jobs         chan *Invocation
	gone         chan struct{} // closed when this session ends (the worker is off)
	exited       bool          // the controller reported the worker off while a job ran
	current      *Invocation
	bootFailures int
}

// Orchestrator is the running service. Create it with New.
type Orchestrator struct {
	cfg     Config
	log     *slog.Logger
	mu      sync.Mutex
	queue   []*Invocation
	workers map[string]*worker
	order   []string // inventory order, for deterministic choices
	live    map[string]*Invocation
	// recent keeps the last finished invocations for lookups when there is
	// no Store (bounded: a FIFO of recentMax ids).
	recent      map[string]*Invocation
	recentOrder []string
	failures    []Failure // the last few failed invocations, for status
	metrics     *Metrics
	closed      bool
	wg          sync.WaitGroup
}

// New checks cfg and returns an orchestrator with every worker off.
func New(cfg Config) (*Orchestrator, error) {
	if cfg.Cluster == nil {
		return nil, errors.New("orchestrator: no cluster")
	}
	if len(cfg.Cluster.SecretBytes()) == 0 {
		return nil, errors.New("orchestrator: the cluster has no secret")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxBooting <= 0 {
		cfg.MaxBooting = len(cfg.Cluster.Workers)
	}
	if cfg.PowerUpTimeout <= 0 {
		cfg.PowerUpTimeout = 60 * time.Second
	}
	if cfg.JobTimeout <= 0 {
		cfg.JobTimeout = 120 * time.Second
	}
	if cfg.PowerOffHoldoff <= 0 {
		cfg.PowerOffHoldoff = 10 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.MaxBootFailures <= 0 {
		cfg.MaxBootFailures = 3
	}
	o := &Orchestrator{cfg: cfg, log: cfg.Log, workers: map[string]*worker{}, live: map[string]*Invocation{},
		recent: map[string]*Invocation{}}
	o.metrics = NewMetrics(o)
	for _, w := range cfg.Cluster.Workers {
		if _, ok := cfg.Controllers[w.Kind]; !ok {
			return nil, fmt.Errorf("orchestrator: no power controller for worker %s of kind %s", w.ID, w.Kind)
		}
		o.workers[w.ID] = &worker{spec: w, state: Off, since: time.Now()}
		o.order = append(o.order, w.ID)
	}
	for _, c := range cfg.Controllers {
		if er, ok := c.(power.ExitReporter); ok {
			er.OnExit(o.workerExited)
		}
	}
	if cfg.Store != nil {
		pending, err := cfg.Store.Pending()
		if err != nil {
			return nil, fmt.Errorf("orchestrator: reading pending invocations: %w", err)
		}
		for _, inv := range pending {
			inv.Restarts++
			if !inv.Started.IsZero() {
				o.log.Warn("invocation was running when mforch stopped; it will run again (reported as a retry)",
					"invocation", inv.ID, "function", inv.Function, "attempts", inv.Attempts)
			}
			inv.Worker, inv.PoweredOn, inv.Connected, inv.Started = "", time.Time{}, time.Time{}, time.Time{}
			o.queue = append(o.queue, inv)
			o.live[inv.ID] = inv
		}
		if len(pending) > 0 {
			o.log.Info("recovered pending invocations", "count", len(pending))
			o.mu.Lock()
			o.dispatchLocked()
			o.mu.Unlock()
		}
	}
	return o, nil
}

// recentMax bounds the finished invocations kept in memory without a Store.
const recentMax = 10000

// ErrClosed is returned for invocations submitted after Close.
var ErrClosed = errors.New("orchestrator is shutting down")

// JobSpec is everything an invocation carries to a worker.
type JobSpec struct {
	Function string
	Args     json.RawMessage
	Timeout  time.Duration // 0: Config.JobTimeout
	Env      map[string]string
	Secrets  map[string][]byte
}

// Submit queues an invocation and returns at once; wait on its Done channel.
func (o *Orchestrator) Submit(function string, args json.RawMessage, timeout time.Duration) (*Invocation, error) {
	return o.SubmitJob(JobSpec{Function: function, Args: args, Timeout: timeout})
}

// SubmitJob queues an invocation of spec and returns at once.
func (o *Orchestrator) SubmitJob(spec JobSpec) (*Invocation, error) {
	if spec.Timeout <= 0 {
		spec.Timeout = o.cfg.JobTimeout
	}
	inv := &Invocation{ID: newID(), Function: spec.Function, Args: spec.Args, Timeout: spec.Timeout,
		Env: spec.Env, Secrets: spec.Secrets, Queued: time.Now(), done: make(chan struct{})}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, ErrClosed
	}
	if o.cfg.Store != nil {
		if err := o.cfg.Store.Accept(inv); err != nil {
			return nil, fmt.Errorf("invocation not accepted: persisting it failed: %w", err)
		}
	}
	o.queue = append(o.queue, inv)
	o.live[inv.ID] = inv
	o.dispatchLocked()
	return inv, nil
}

// Warm powers on up to n workers that are off, without jobs, so that calls
// expected soon find a worker up (scale from zero). It returns how many it
// powered on. A warmed worker that gets no job powers off after
// max(IdleTimeout, 2 s).
func (o *Orchestrator) Warm(n int) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0
	}
	started := 0
	for _, id := range o.order {
		if started >= n {
			break
		}
		if w := o.workers[id]; w.state == Off {
			o.powerOnLocked(w)
			started++
		}
	}
	return started
}

// Lookup returns an invocation by id: a live one, or one the store holds.
func (o *Orchestrator) Lookup(id string) (*Invocation, bool) {
	o.mu.Lock()
	inv, ok := o.live[id]
	if !ok {
		inv, ok = o.recent[id]
	}
	o.mu.Unlock()
	if ok {
		return inv, true
	}
	if o.cfg.Store != nil {
		if inv, ok, err := o.cfg.Store.Get(id); err == nil && ok {
			return inv, true
		}
	}
	return nil, false
}

// Invoke submits an invocation and waits for it. A cancelled ctx withdraws
// the invocation if no worker has started it yet.
func (o *Orchestrator) Invoke(ctx context.Context, function string, args json.RawMessage, timeout time.Duration) (*Invocation, error) {
	return o.InvokeJob(ctx, JobSpec{Function: function, Args: args, Timeout: timeout})
}

// InvokeJob submits spec and waits for it, like Invoke.
func (o *Orchestrator) InvokeJob(ctx context.Context, spec JobSpec) (*Invocation, error) {
	inv, err := o.SubmitJob(spec)
	if err != nil {
		return nil, err
	}
	select {
	case <-inv.done:
		return inv, nil
	case <-ctx.Done():
		o.withdraw(inv, ctx.Err())
		<-inv.done
		return inv, nil
	}
}

func (o *Orchestrator) withdraw(inv *Invocation, why error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, q := range o.queue {
		if q == inv {
			o.queue = append(o.queue[:i], o.queue[i+1:]...)
			o.finishLocked(inv, fmt.Sprintf("withdrawn before it ran: %v", why))
			return
		}
	}
}

func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// dispatchLocked hands queued jobs to idle workers, then powers on as many
// off workers as the rest of the queue needs, within MaxBooting.
func (o *Orchestrator) dispatchLocked() {
	if o.closed {
		return
	}
	if len(o.queue) > 0 && o.allFailedLocked() {
		for _, inv := range o.queue {
			inv.Unavailable = true
			o.finishLocked(inv, "no worker can run it: every worker failed to boot repeatedly (see their console logs and mforch status)")
		}
		o.queue = nil
		return
	}
	for _, id := range o.order {
		if len(o.queue) == 0 {
			break
		}
		w := o.workers[id]
		if w.state != Idle {
			continue
		}
		inv := o.queue[0]
		o.queue = o.queue[1:]
		o.setState(w, Working)
		w.current = inv
		w.jobs <- inv // buffered; an idle worker's channel is empty
	}
	booting := 0
	for _, w := range o.workers {
		if w.state == Booting {
			booting++
		}
	}
	need := len(o.queue) - booting
	for _, id := range o.order {
		if need <= 0 || booting >= o.cfg.MaxBooting {
			break
		}
		w := o.workers[id]
		if w.state != Off {
			continue
		}
		o.powerOnLocked(w)
		booting++
		need--
	}
}

func (o *Orchestrator) allFailedLocked() bool {
	for _, w := range o.workers {
		if w.state != Failed {
			return false
		}
	}
	return len(o.workers) > 0
}

func (o *Orchestrator) setState(w *worker, s State) {
	if w.state != s {
		o.log.Debug("worker state", "worker", w.spec.ID, "from", w.state, "to", s)
	}
	w.state, w.since = s, time.Now()
}

// endSessionLocked records that the worker is off (or failed): whatever an
// older goroutine still does for this session is ignored from now on.
func (o *Orchestrator) endSessionLocked(w *worker, s State) {
	o.setState(w, s)
	w.session++
	if w.gone != nil {
		select {
		case <-w.gone:
		default:
			close(w.gone)
		}
	}
}

func (o *Orchestrator) powerOnLocked(w *worker) {
	w.session++
	session := w.session
	o.setState(w, Booting)
	w.poweredOn = time.Now()
	w.jobs = make(chan *Invocation, 1)
	w.gone = make(chan struct{})
	w.exited = false
	ctrl := o.cfg.Controllers[w.spec.Kind]
	spec := w.spec
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		if err := ctrl.PowerOn(context.Background(), spec); err != nil {
			o.log.Error("power on failed", "worker", spec.ID, "err", err)
			o.bootFailed(spec.ID, session, err.Error())
			return
		}
		o.log.Info("worker powered on", "worker", spec.ID)
	}()
	time.AfterFunc(o.cfg.PowerUpTimeout, func() {
		o.mu.Lock()
		late := w.session == session && w.state == Booting
		o.mu.Unlock()
		if late {
			o.bootFailed(spec.ID, session, fmt.Sprintf("no hello within %s of power-on", o.cfg.PowerUpTimeout))
		}
	})
}

// bootFailed handles a worker that did not come up: force it off and count
// the failure; too many in a row mark it failed.
func (o *Orchestrator) bootFailed(id string, session uint64, why string) {
	o.mu.Lock()
	w := o.workers[id]
	if w.session != session || w.state != Booting {
		o.mu.Unlock()
		return
	}
	w.bootFailures++
	o.setState(w, Stopping)
	o.mu.Unlock()
	o.log.Warn("worker failed to boot", "worker", id, "why", why, "failures", w.bootFailures)
	o.cfg.Controllers[w.spec.Kind].PowerOff(context.Background(), w.spec)
	o.mu.Lock()
	defer o.mu.Unlock()
	if w.session == session && w.state == Stopping {
		if w.bootFailures >= o.cfg.MaxBootFailures {
			o.endSessionLocked(w, Failed)
			o.log.Error("worker marked failed: it did not boot several times in a row; check its console log and power", "worker", id)
		} else {
			o.endSessionLocked(w, Off)
		}
	}
	o.dispatchLocked()
}

// workerExited is the controller's report that a worker went off by itself.
func (o *Orchestrator) workerExited(id string, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w, ok := o.workers[id]
	if !ok {
		return
	}
	switch w.state {
	case Stopping, Idle:
		o.endSessionLocked(w, Off)
	case Booting:
		w.bootFailures++
		o.log.Warn("worker exited while booting", "worker", id, "err", err, "failures", w.bootFailures)
		if w.bootFailures >= o.cfg.MaxBootFailures {
			o.endSessionLocked(w, Failed)
		} else {
			o.endSessionLocked(w, Off)
		}
	case Working:
		// The worker may have sent its result just before powering off; the
		// connection's goroutine reads it or sees the connection drop, and
		// then ends the session. No timeout is needed: the socket closes
		// with the worker.
		w.exited = true
		return
	}
	o.dispatchLocked()
}

// lostJobLocked requeues the worker's current invocation (at the front, so it
// keeps its place) or fails it once it has used its attempts.
func (o *Orchestrator) lostJobLocked(w *worker, why string) {
	inv := w.current
	w.current = nil
	if inv == nil {
		return
	}
	o.log.Warn("invocation lost its worker", "invocation", inv.ID, "worker", w.spec.ID, "attempt", inv.Attempts, "why", why)
	if inv.Attempts >= o.cfg.MaxAttempts {
		inv.Unavailable = true
		o.finishLocked(inv, fmt.Sprintf("%s; gave up after %d attempts", why, inv.Attempts))
		return
	}
	inv.Worker, inv.PoweredOn, inv.Connected, inv.Started = "", time.Time{}, time.Time{}, time.Time{}
	if o.closed {
		o.abandonLocked(inv)
		return
	}
	o.queue = append([]*Invocation{inv}, o.queue...)
}

func (o *Orchestrator) finishLocked(inv *Invocation, errText string) {
	if errText != "" {
		inv.Err = errText
	}
	inv.Finished = time.Now()
	if o.cfg.Store != nil {
		if err := o.cfg.Store.Finish(inv); err != nil {
			o.log.Error("recording a finished invocation failed; it may run again after a restart", "invocation", inv.ID, "err", err)
		}
	}
	delete(o.live, inv.ID)
	if o.cfg.Store == nil {
		o.recent[inv.ID] = inv
		o.recentOrder = append(o.recentOrder, inv.ID)
		if len(o.recentOrder) > recentMax {
			delete(o.recent, o.recentOrder[0])
			o.recentOrder = o.recentOrder[1:]
		}
	}
	o.metrics.Record(inv)
	if inv.Err != "" {
		o.failures = append(o.failures, Failure{ID: inv.ID, Function: inv.Function, Worker: inv.Worker,
			Attempts: inv.Attempts, Error: inv.Err, At: inv.Finished})
		if len(o.failures) > maxFailures {
			o.failures = o.failures[1:]
		}
	}
	if o.cfg.Recorder != nil {
		o.cfg.Recorder.Record(inv)
	}
	close(inv.done)
}

// Serve accepts worker connections on ln until it is closed.
func (o *Orchestrator) Serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("worker listener: %w", err)
		}
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			defer c.Close()
			o.serveConn(c)
		}()
	}
}

func (o *Orchestrator) serveConn(c net.Conn) {
	remote := c.RemoteAddr().String()
	pc := protocol.NewConn(c, o.cfg.Cluster.SecretBytes())
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var h protocol.Hello
	if err := pc.Expect(protocol.TypeHello, &h); err != nil {
		o.log.Warn("refused worker connection", "remote", remote, "err", err)
		return
	}
	c.SetDeadline(time.Time{})
	o.mu.Lock()
	w, known := o.workers[h.WorkerID]
	expected := known && w.state == Booting
	var session uint64
	if expected {
		session = w.session
		w.connected = time.Now()
		w.boot = h.Boot
		w.bootFailures = 0
		o.setState(w, Idle)
		o.dispatchLocked()
	}
	o.mu.Unlock()
	if !expected {
		why := "not in the inventory"
		if known {
			why = "not expected (state " + string(w.state) + ")"
		}
		o.log.Warn("turning away worker", "worker", h.WorkerID, "remote", remote, "why", why)
		pc.Send(protocol.TypeCommand, protocol.Command{Action: protocol.CmdPowerOff})
		return
	}
	o.log.Info("worker connected", "worker", h.WorkerID, "init_ms", h.Boot.InitMS, "connected_ms", h.Boot.ConnectedMS)
	o.workLoop(w, session, pc, c)
}

// workLoop feeds jobs to one connected worker until it is told to power off.
func (o *Orchestrator) workLoop(w *worker, session uint64, pc *protocol.Conn, c net.Conn) {
	first := true
	for {
		var inv *Invocation
		idle := o.cfg.IdleTimeout
		if first {
			// A worker powered on for a job that another worker took waits
			// briefly for the next one rather than booting in vain.
			idle = max(idle, 2*time.Second)
		}
		select {
		case inv = <-w.jobs:
		case <-w.gone:
			return
		case <-time.After(idle):
			o.mu.Lock()
			if w.session == session && w.state == Idle {
				o.setState(w, Stopping)
				o.mu.Unlock()
				o.stop(w, session, pc)
				return
			}
			o.mu.Unlock()
			select {
			case inv = <-w.jobs: // a job was handed over as the timer fired
			case <-w.gone:
				return
			}
		}
		first = false
		if !o.runJob(w, session, pc, c, inv) {
			return
		}
		o.mu.Lock()
		stale := w.session != session
		if !stale && w.exited {
			o.endSessionLocked(w, Off)
			o.dispatchLocked()
			stale = true
		}
		if !stale {
			if o.cfg.IdleTimeout > 0 {
				o.setState(w, Idle)
				o.dispatchLocked()
			} else {
				o.setState(w, Stopping)
			}
		}
		state := w.state
		o.mu.Unlock()
		if stale {
			return
		}
		if state == Stopping {
			o.stop(w, session, pc)
			return
		}
		if err := pc.Send(protocol.TypeCommand, protocol.Command{Action: protocol.CmdWait}); err != nil {
			o.connLost(w, session, err)
			return
		}
	}
}

// runJob sends one job and waits for its result. It reports false when the
// connection failed (the job was requeued or failed).
func (o *Orchestrator) runJob(w *worker, session uint64, pc *protocol.Conn, c net.Conn, inv *Invocation) bool {
	o.mu.Lock()
	inv.Attempts++
	inv.Worker = w.spec.ID
	inv.PoweredOn, inv.Connected, inv.Boot = w.poweredOn, w.connected, w.boot
	inv.Started = time.Now()
	if o.cfg.Store != nil {
		// Record the attempt, so a restart knows the job may have run.
		if err := o.cfg.Store.Accept(inv); err != nil {
			o.log.Error("recording an attempt failed", "invocation", inv.ID, "err", err)
		}
	}
	o.mu.Unlock()
	job := protocol.Job{ID: inv.ID, Function: inv.Function, Args: inv.Args,
		TimeoutMS: inv.Timeout.Milliseconds(), Attempt: inv.Attempts, Services: o.cfg.Cluster.Services,
		Env: inv.Env, Secrets: inv.Secrets}
	c.SetDeadline(time.Now().Add(inv.Timeout + 15*time.Second))
	var res protocol.Result
	err := pc.Send(protocol.TypeJob, job)
	if err == nil {
		err = pc.Expect(protocol.TypeResult, &res)
	}
	c.SetDeadline(time.Time{})
	if err == nil && res.ID != inv.ID {
		err = fmt.Errorf("result for invocation %q, expected %q", res.ID, inv.ID)
	}
	if err != nil {
		o.connLost(w, session, err)
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if w.current != inv {
		return false // the worker was declared dead meanwhile; the job was requeued
	}
	w.current = nil
	inv.Result, inv.TimedOut, inv.ExecMS = res.Result, res.TimedOut, res.ExecMS
	o.finishLocked(inv, res.Error)
	return true
}

// connLost handles a worker whose connection broke: its job is requeued and
// the worker is forced off.
func (o *Orchestrator) connLost(w *worker, session uint64, err error) {
	o.mu.Lock()
	if w.session != session {
		o.mu.Unlock()
		return
	}
	o.log.Warn("worker connection lost", "worker", w.spec.ID, "state", w.state, "err", err)
	if w.state == Working {
		why := fmt.Sprintf("worker %s connection lost mid-job (%v)", w.spec.ID, err)
		if w.exited {
			why = fmt.Sprintf("worker %s went off mid-job", w.spec.ID)
		}
		o.lostJobLocked(w, why)
	}
	if w.exited {
		o.endSessionLocked(w, Off)
		o.dispatchLocked()
		o.mu.Unlock()
		return
	}
	o.setState(w, Stopping)
	o.dispatchLocked()
	o.mu.Unlock()
	o.forceOff(w, session)
}

// stop tells a worker to power off and waits for it to go off.
func (o *Orchestrator) stop(w *worker, session uint64, pc *protocol.Conn) {
	if err := pc.Send(protocol.TypeCommand, protocol.Command{Action: protocol.CmdPowerOff}); err != nil {
		o.forceOff(w, session)
		return
	}
	if _, reports := o.cfg.Controllers[w.spec.Kind].(power.ExitReporter); reports {
		// The controller calls workerExited; if the worker hangs instead of
		// powering off, pull the plug after the holdoff.
		time.AfterFunc(o.cfg.PowerOffHoldoff, func() {
			o.mu.Lock()
			hung := w.session == session && w.state == Stopping
			o.mu.Unlock()
			if hung {
				o.forceOff(w, session)
			}
		})
		return
	}
	time.AfterFunc(o.cfg.PowerOffHoldoff, func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		if w.session == session && w.state == Stopping {
			o.endSessionLocked(w, Off)
			o.dispatchLocked()
		}
	})
}

func (o *Orchestrator) forceOff(w *worker, session uint64) {
	if err := o.cfg.Controllers[w.spec.Kind].PowerOff(context.Background(), w.spec); err != nil {
		o.log.Error("forced power off failed", "worker", w.spec.ID, "err", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if w.session == session && w.state == Stopping {
		o.endSessionLocked(w, Off)
		o.dispatchLocked()
	}
}

// WorkerStatus is a worker's state for status reports.
type WorkerStatus struct {
	ID    string        `json:"id"`
	Kind  string        `json:"kind"`
	State State         `json:"state"`
	For   time.Duration `json:"for_ns"`
}

// Status is a snapshot of the cluster.
type Status struct {
	Workers        []WorkerStatus `json:"workers"`
	QueueDepth     int            `json:"queue_depth"`
	Running        int            `json:"running"`
	RecentFailures []Failure      `json:"recent_failures,omitempty"`
}

// Failure is a failed invocation, for status reports.
type Failure struct {
	ID       string    `json:"id"`
	Function string    `json:"function"`
	Worker   string    `json:"worker,omitempty"`
	Attempts int       `json:"attempts"`
	Error    string    `json:"error"`
	At       time.Time `json:"at"`
}

// maxFailures bounds the failures Status reports.
const maxFailures = 10

// Status returns the workers' states and the queue depth.
func (o *Orchestrator) Status() Status {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := Status{QueueDepth: len(o.queue), RecentFailures: append([]Failure(nil), o.failures...)}
	for _, id := range o.order {
		w := o.workers[id]
		s.Workers = append(s.Workers, WorkerStatus{id, w.spec.Kind, w.state, time.Since(w.since)})
		if w.state == Working {
			s.Running++
		}
	}
	return s
}

// Shutdown stops admitting work, lets running jobs finish until ctx ends,
// and powers every worker off. Invocations that did not run stay pending in
// the Store (they run after the next start); without a Store they fail.
func (o *Orchestrator) Shutdown(ctx context.Context) {
	o.mu.Lock()
	o.closed = true
	for _, inv := range o.queue {
		o.abandonLocked(inv)
	}
	o.queue = nil
	o.mu.Unlock()
	for {
		busy := 0
		for _, w := range o.Status().Workers {
			if w.State == Working {
				busy++
			}
		}
		if busy == 0 {
			break
		}
		select {
		case <-ctx.Done():
			o.log.Warn("shutdown: stopping workers with jobs still running", "running", busy)
			busy = 0
		case <-time.After(50 * time.Millisecond):
		}
		if busy == 0 {
			break
		}
	}
	o.mu.Lock()
	var on []*worker
	for _, id := range o.order {
		if w := o.workers[id]; w.state != Off && w.state != Failed {
			on = append(on, w)
		}
	}
	o.mu.Unlock()
	for _, w := range on {
		o.cfg.Controllers[w.spec.Kind].PowerOff(context.Background(), w.spec)
	}
}

// Close shuts down at once: running jobs are not waited for.
func (o *Orchestrator) Close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	o.Shutdown(ctx)
}

// abandonLocked releases the waiter of an invocation that will not run in
// this process. With a Store it stays pending for the next start.
func (o *Orchestrator) abandonLocked(inv *Invocation) {
	if o.cfg.Store == nil {
		o.finishLocked(inv, ErrClosed.Error())
		return
	}
	inv.Err = "mforch shut down before the invocation finished; it stays queued and runs after the next start"
	delete(o.live, inv.ID)
	close(inv.done)
}
