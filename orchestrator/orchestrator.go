// Package orchestrator owns a MicroFaaS cluster: it keeps one queue of
// invocations, powers workers on when there is work, hands each job to a
// worker that has booted and connected, collects the result and tells the
// worker what to do next. A worker that dies mid-job has its invocation
// retried on another, up to a limit.
//
// The scheduler is a state machine (machine.go) driven by one loop
// (loop.go); worker connections (conn.go), power controllers and the store
// are outside it and talk to it through events.
package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/orchestrator/workerlog"
	"github.com/microfaas/microfaas/protocol"
)

// Config tunes the orchestrator. Zero values take the defaults noted.
type Config struct {
	Cluster     *cluster.Cluster
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
	// Policy says, per worker kind (cluster.KindBBB, cluster.KindVM), what a
	// worker does once its job is done: cluster.PolicyOff (the default),
	// PolicyRebootWhileQueued or PolicyWarmPool (see machine.go's afterJob).
	Policy map[string]cluster.Policy
	// PowerOffHoldoff is how long a worker told to power off may take: a
	// controller that reports exits forces it off after that; for one that
	// cannot (GPIO boards) it counts as off after that (10 s).
	PowerOffHoldoff time.Duration
	// MaxAttempts bounds how often an invocation is tried (3).
	MaxAttempts int
	// MaxBootFailures marks a worker failed after this many boots in a row
	// that did not reach hello (3).
	MaxBootFailures int
	// MaxQueue bounds invocations waiting for a worker (1000): more are
	// refused with ErrQueueFull (HTTP 429 with Retry-After).
	MaxQueue int
	// MaxTimeout bounds the timeout an invocation may ask for (1 h):
	// longer is ErrBadTimeout (HTTP 400).
	MaxTimeout time.Duration
	// Functions are the functions the workers' images hold (built-ins and
	// user functions), so an unknown one is refused at submit
	// (ErrUnknownFunction, HTTP 404) instead of booting a worker to fail.
	// Functions workers report in their hello are added. Empty, and before
	// any hello: every name is accepted.
	Functions []string
	// Bundles, if set, holds the functions deployed at run time: they are
	// known functions, and their jobs carry the bundle for the worker's
	// architecture. Nil: no run-time deploys.
	Bundles  Bundles
	Recorder Recorder
	// Store, if set, persists accepted invocations: Submit returns only
	// once the invocation is on disk, and New queues again whatever a
	// previous run left pending.
	Store Store
	// Queue, if set, is a queue several orchestrators share (queue.go,
	// orchestrator/natsq): Submit publishes to it, and this orchestrator
	// runs what its workers can take from it. It is the Store too: set
	// one or the other.
	Queue SharedQueue
	// Clock is the time source (default: the system clock); tests inject
	// a clock.Fake.
	Clock clock.Clock
	// OnStateChange, if set, is called from the orchestrator's loop on
	// every worker state change, in order. It must not block.
	OnStateChange func(state.Change)
	// Energy, if set, attributes a meter's energy to workers and
	// invocations (energy.go): the orchestrator feeds it the workers'
	// state changes, the caller runs the meter into its Add. Rows reach
	// the Recorder once their energy is final.
	Energy *energy.Accountant
	// EnergyEvery is how often energy is attributed (5 s; longer when
	// attribution gets costly, so that it stays under 0.5% of a core).
	EnergyEvery time.Duration
	// EnergyWait bounds how long Shutdown waits for the meter to report
	// past the last power-off (5 s).
	EnergyWait time.Duration
	// EnergyKeep is how much history energy attribution keeps (1 h; with
	// one meter for many boards, the per-state fit uses this window), so
	// that a long-running mforch does not grow. Sessions whose invocations
	// are not final are always kept.
	EnergyKeep time.Duration
	// WorkerLogs, if set, keeps each worker's own log per boot (the kernel
	// and mfinit lines it ships, and its console where mforch has one:
	// orchestrator/workerlog); invocations link to their boot's.
	WorkerLogs *workerlog.Book
	Log        *slog.Logger
}

// Bundles is where the orchestrator finds the functions deployed at run
// time (orchestrator/deploy implements it). Its methods are called from
// the orchestrator's loop (Bundle) and from worker connections (Open), at
// once: they must be safe for concurrent use, and Bundle must not block.
type Bundles interface {
	// Bundle is function's bundle for workers of arch ("x86" or "arm",
	// target names); ok false when function is not deployed at run time
	// (baked-in or unknown).
	Bundle(function, arch string) (ref protocol.BundleRef, ok bool)
	// Open opens the bundle file with that digest for reading.
	Open(digest string) (*os.File, error)
}

// Defaults the Config documents, and fixed timings.
const (
	firstIdle = 2 * time.Second  // a worker powered on for a job another took waits this long
	jobGrace  = 15 * time.Second // beyond a job's timeout before its worker is declared lost
)

// Orchestrator is the running service. Create it with New.
type Orchestrator struct {
	cfg     Config
	log     *slog.Logger
	clock   clock.Clock
	metrics *Metrics

	// mu guards m: the loop holds it while it applies events; Status and
	// Lookup take it to read.
	mu sync.Mutex
	m  *machine

	events   chan timedEvent
	timersMu sync.Mutex
	timers   map[string]clock.Timer // per worker
	stopped  chan struct{}          // closed when the loop is told to stop
	loopDone chan struct{}
	// commits feeds the committer (nil without a Store).
	commits     chan commitBatch
	commitsDone chan struct{}
	// gatherBackoff and gatherSkip: the committer's alone (see gather).
	gatherBackoff, gatherSkip int
	wg                        sync.WaitGroup // controller calls under way

	shutdownOnce sync.Once
	shutdownDone chan struct{}

	energy *energyBook // nil without Config.Energy
	shared *shared     // nil without Config.Queue
	// acc runs the worker handshakes: of the worker port (Serve) and of
	// the workers' own channels (power.SessionSource).
	acc *protocol.Acceptor
}

// New checks cfg, queues again what the Store holds pending, and starts the
// orchestrator with every worker off.
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
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
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
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 1000
	}
	if cfg.MaxTimeout <= 0 {
		cfg.MaxTimeout = time.Hour
	}
	if cfg.Queue != nil {
		if cfg.Store != nil {
			return nil, errors.New("orchestrator: a Store and a shared Queue are both set: the queue is the store")
		}
		cfg.Store = cfg.Queue
	}
	mc := machineConfig{
		MaxBooting: cfg.MaxBooting, MaxAttempts: cfg.MaxAttempts, MaxBootFailures: cfg.MaxBootFailures,
		PowerUpTimeout: cfg.PowerUpTimeout, JobTimeout: cfg.JobTimeout, IdleTimeout: cfg.IdleTimeout,
		PowerOffHoldoff: cfg.PowerOffHoldoff, FirstIdle: max(cfg.IdleTimeout, firstIdle), JobGrace: jobGrace,
		ReportsExit: map[string]bool{}, Durable: cfg.Store != nil, Shared: cfg.Queue != nil, Services: cfg.Cluster.Services,
		MaxQueue: cfg.MaxQueue, Functions: cfg.Functions, Bundles: cfg.Bundles, Policy: cfg.Policy,
	}
	for kind, p := range cfg.Policy {
		if err := checkPolicy(p); err != nil {
			return nil, fmt.Errorf("orchestrator: power policy of worker kind %s: %w", kind, err)
		}
		if p.Name != cluster.PolicyOff {
			cfg.Log.Info("power policy", "kind", kind, "policy", p.String())
		}
	}
	for _, w := range cfg.Cluster.Workers {
		if _, ok := cfg.Controllers[w.Kind]; !ok {
			return nil, fmt.Errorf("orchestrator: no power controller for worker %s of kind %s", w.ID, w.Kind)
		}
	}
	o := &Orchestrator{cfg: cfg, log: cfg.Log, clock: cfg.Clock,
		m:      newMachine(mc, cfg.Log, cfg.Cluster.Workers, cfg.Clock.Now()),
		events: make(chan timedEvent, 4*maxBatch), timers: map[string]clock.Timer{},
		stopped: make(chan struct{}), loopDone: make(chan struct{}), shutdownDone: make(chan struct{})}
	o.metrics = NewMetrics(o)
	o.acc = o.newAcceptor()
	if cfg.Energy != nil {
		o.energy = newEnergyBook(o)
		go o.energy.run()
	}
	for kind, c := range cfg.Controllers {
		if er, ok := c.(power.ExitReporter); ok {
			mc.ReportsExit[kind] = true
			er.OnExit(func(id string, err error) { o.post(evExited{id, err}) })
		}
		if ss, ok := c.(power.SessionSource); ok {
			// A QEMU worker's session over its virtio-serial port: the
			// handshake may wait for the whole boot.
			ss.OnSession(func(id string, conn net.Conn) { o.acc.ServeConn(conn, id, max(cfg.PowerUpTimeout, helloTimeout)) })
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
				o.log.Warn("invocation may have been running when mforch stopped; it will run again (its attempts count the earlier start)",
					"invocation", inv.ID, "function", inv.Function, "attempts", inv.Attempts)
			}
			inv.Worker, inv.PoweredOn, inv.Connected, inv.Started = "", time.Time{}, time.Time{}, time.Time{}
			inv.reserved = inv.Attempts
			o.m.live[inv.ID] = inv
			o.m.queue = append(o.m.queue, inv)
		}
		if len(pending) > 0 {
			o.log.Info("recovered pending invocations", "count", len(pending))
			o.m.dispatch()
		}
	}
	if cfg.Store != nil {
		o.commits, o.commitsDone = make(chan commitBatch, 4*maxBatch), make(chan struct{})
		go o.committer()
	}
	// A warm pool starts filling now.
	o.m.fillPools()
	// The recovery's and the pool's actions (power-ons) run as the loop's
	// first turn.
	go o.loop(o.m.take())
	if cfg.Queue != nil {
		if err := o.startShared(); err != nil {
			o.Close()
			return nil, fmt.Errorf("orchestrator: shared queue: %w", err)
		}
	}
	return o, nil
}

// Submit queues an invocation and returns at once; wait on its Done channel.
func (o *Orchestrator) Submit(function string, args json.RawMessage, timeout time.Duration) (*Invocation, error) {
	return o.SubmitJob(JobSpec{Function: function, Args: args, Timeout: timeout})
}

// SubmitJob queues an invocation of spec and returns once it is accepted
// (with a Store: committed to disk).
func (o *Orchestrator) SubmitJob(spec JobSpec) (*Invocation, error) {
	if spec.Timeout <= 0 {
		spec.Timeout = o.cfg.JobTimeout
	}
	if spec.Timeout > o.cfg.MaxTimeout {
		return nil, newError(ErrBadTimeout, "%s asked, at most %s (mforch --max-timeout)", spec.Timeout, o.cfg.MaxTimeout)
	}
	if err := o.checkID(spec.ID); err != nil {
		return nil, err
	}
	if o.shared != nil {
		return o.submitShared(spec)
	}
	now := o.clock.Now()
	inv := &Invocation{ID: newID(now), Function: spec.Function, Args: spec.Args, Timeout: spec.Timeout,
		Env: spec.Env, Secrets: spec.Secrets, HTTP: spec.HTTP, Queued: now, done: make(chan struct{})}
	reply := make(chan error, 1)
	if !o.post(evSubmit{inv, reply}) {
		return nil, ErrClosed
	}
	if err := <-reply; err != nil {
		return nil, err
	}
	return inv, nil
}

// Warm powers on up to n workers that are off, without jobs, so that calls
// expected soon find a worker up (scale from zero). function, if set, is
// the function those calls are for: if it was deployed at run time, each
// worker boots with its bundle where its controller can take one (as for
// a queued call), so the first call need not fetch it. It returns how many
// it powered on. A warmed worker that gets no job powers off after
// max(IdleTimeout, 2 s).
func (o *Orchestrator) Warm(function string, n int) int {
	reply := make(chan int, 1)
	if !o.post(evWarm{function: function, n: n, reply: reply}) {
		return 0
	}
	return <-reply
}

// Lookup returns an invocation by id: a live one, or one the store holds.
func (o *Orchestrator) Lookup(id string) (*Invocation, bool) {
	o.mu.Lock()
	inv, ok := o.m.live[id]
	if !ok {
		inv, ok = o.m.recent[id]
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
		if o.shared != nil {
			// Another orchestrator may run it already: it stays queued.
			o.unawait(inv, newError(ErrUnavailable, "the caller stopped waiting (%v); the invocation stays queued: GET /invocations/%s", ctx.Err(), inv.ID))
			<-inv.done
			return inv, nil
		}
		if !o.post(evWithdraw{inv, ctx.Err()}) {
			return inv, nil // shutting down: the waiter is released
		}
		<-inv.done
		return inv, nil
	}
}

// Functions lists, sorted, the functions the workers' images hold:
// Config.Functions and those every worker named in its hello. Functions
// deployed at run time are Config.Bundles' to list.
func (o *Orchestrator) Functions() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Sorted(maps.Keys(o.m.known))
}

// WorkerStatus is a worker's state for status reports.
type WorkerStatus struct {
	ID    string        `json:"id"`
	Kind  string        `json:"kind"`
	State state.Name    `json:"state"`
	For   time.Duration `json:"for_ns"`
}

// Status is a snapshot of the cluster.
type Status struct {
	Workers        []WorkerStatus `json:"workers"`
	QueueDepth     int            `json:"queue_depth"`
	Running        int            `json:"running"`
	RecentFailures []Failure      `json:"recent_failures,omitempty"`
	// With a shared queue (FullStatus): every instance's status, the
	// invocations the shared queue holds (queued or running), or why
	// they could not be read.
	Instances         []InstanceStatus `json:"instances,omitempty"`
	SharedQueueDepth  *uint64          `json:"shared_queue_depth,omitempty"`
	InstallationError string           `json:"installation_error,omitempty"`
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

// Status returns the workers' states and the queue depth.
func (o *Orchestrator) Status() Status {
	now := o.clock.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	s := Status{QueueDepth: len(o.m.queue), RecentFailures: append([]Failure(nil), o.m.failures...)}
	for _, id := range o.m.order {
		w := o.m.workers[id]
		s.Workers = append(s.Workers, WorkerStatus{id, w.spec.Kind, w.state, now.Sub(w.since)})
		if w.state == state.Working {
			s.Running++
		}
	}
	return s
}

// Shutdown stops admitting work, lets running jobs finish until ctx ends,
// and powers every worker off. Invocations that did not run stay pending in
// the Store (they run after the next start); without a Store they fail.
// Later calls wait for the first to finish.
func (o *Orchestrator) Shutdown(ctx context.Context) {
	o.shutdownOnce.Do(func() {
		defer close(o.shutdownDone)
		drained := make(chan struct{})
		o.post(evShutdown{drained})
		select {
		case <-drained:
		case <-ctx.Done():
		}
		select {
		case <-drained:
		default:
			o.mu.Lock()
			running := o.m.running()
			o.mu.Unlock()
			o.log.Warn("shutdown: stopping workers with jobs still running", "running", running)
		}
		off := make(chan struct{})
		o.post(evPowerOffAll{off})
		<-off
		o.syncCommits()
		if o.shared != nil {
			o.releaseWaiters()
		}
		close(o.stopped)
		<-o.loopDone
		if o.commits != nil {
			close(o.commits)
			<-o.commitsDone
		}
		if o.energy != nil {
			o.energy.finish()
		}
		o.timersMu.Lock()
		for _, t := range o.timers {
			t.Stop()
		}
		o.timersMu.Unlock()
		o.wg.Wait()
	})
	<-o.shutdownDone
}

// Close shuts down at once: running jobs are not waited for.
func (o *Orchestrator) Close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	o.Shutdown(ctx)
}

// syncCommits waits until everything handed to the committer is on disk
// and the events that follow from it are handled by the loop.
func (o *Orchestrator) syncCommits() {
	if o.commits == nil {
		return
	}
	// A batch of one action that closes a channel, through the committer
	// and then through the loop.
	committed := make(chan struct{})
	o.commits <- commitBatch{0, []action{actClosed{committed}}}
	<-committed
	looped := make(chan struct{})
	o.post(evSync{looped})
	<-looped
}

// checkPolicy refuses a Config.Policy that cluster.ParsePolicy would not
// give (a Config built in Go, not from flags or a file).
func checkPolicy(p cluster.Policy) error {
	switch {
	case p.Name == "" || p.Name == cluster.PolicyOff || p.Name == cluster.PolicyRebootWhileQueued:
		return nil
	case p.Name == cluster.PolicyWarmPool && p.Pool >= 1:
		return nil
	}
	return fmt.Errorf("%+v: %w", p, cluster.ErrPolicy)
}
