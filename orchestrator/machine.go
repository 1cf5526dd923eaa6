package orchestrator

import (
	"cmp"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/target"
)

// The scheduler is a state machine: machine.handle takes one event and
// changes the queue and the workers' states, appending the actions that
// the change needs (power a worker on, send it a job, persist, reply). It
// does no I/O and reads no clock: each event carries its time. The loop in
// loop.go feeds it events and carries out its actions; docs/orchestrator.md
// draws the transitions and machine_test.go drives each one.

// A worker's states and their changes are state.Name and state.Change
// (orchestrator/state), which the energy accounting and the lab share.

// Events: what happened.
type (
	evSubmit struct {
		inv   *Invocation
		reply chan error
	}
	// evAccepted / evAcceptFailed follow an evSubmit once its store write
	// is committed (or failed).
	evAccepted     struct{ inv *Invocation }
	evAcceptFailed struct{ inv *Invocation }
	evWithdraw     struct {
		inv *Invocation
		why error
	}
	evWarm struct {
		// function, if set, is the function the expected calls are for:
		// the workers powered on boot with its bundle where they can.
		function string
		n        int
		reply    chan int
	}
	// evPowerOn and evPowerOff are a controller's PowerOn / forced PowerOff returning.
	evPowerOn struct {
		worker  string
		session uint64
		err     error
	}
	evPowerOff struct {
		worker  string
		session uint64
		err     error
	}
	// evHello: an authenticated hello from worker on conn.
	evHello struct {
		worker    string
		functions []string // those the worker's image holds
		bundles   []string // digests of the bundles it holds already (verified)
		boot      protocol.BootTimes
		logBoot   int // the boot's number in Config.WorkerLogs (0: none)
		remote    string
		conn      *workerConn
		reply     chan helloReply
	}
	evResult struct {
		worker  string
		session uint64
		res     protocol.Result
	}
	evConnLost struct {
		worker  string
		session uint64
		err     error
	}
	// evExited: the controller saw the worker go off by itself.
	evExited struct {
		worker string
		err    error
	}
	evTimer struct {
		worker         string
		session, timer uint64
	}
	// evShutdown stops admission; drained is closed once no job runs.
	evShutdown struct{ drained chan struct{} }
	// evPowerOffAll forces every worker off; off is closed when all are.
	evPowerOffAll struct{ off chan struct{} }
	// evCommitted: the store writes of every turn up to turn are on disk.
	evCommitted struct{ turn uint64 }
	// evSync does nothing; closing done says every event posted before it
	// was handled.
	evSync struct{ done chan struct{} }
)

type helloReply struct {
	ok      bool
	session uint64
}

// Actions: what the loop must do. With a Store, store writes go to the
// committer, which commits them in groups; the actions that must not
// happen before those writes are on disk (replies to Submit, releasing
// waiters, recording, sending a job whose start is not yet on disk) run
// after the commit, in order. See durable().
type (
	actPowerOn struct {
		w       cluster.Worker
		session uint64
		// bundle, if set, is the bundle of the invocation the worker is
		// powered on for: a controller that can (power.BundleLoader)
		// delivers it with the boot, so the worker need not fetch it.
		bundle *protocol.BundleRef
	}
	actPowerOff struct {
		w       cluster.Worker
		session uint64
	}
	actSend struct {
		conn *workerConn
		typ  string
		msg  any
		// durable: only once the store writes emitted so far are
		// committed (a job whose start is not yet on disk).
		durable bool
	}
	actClose     struct{ conn *workerConn }
	actHelloDone struct {
		reply chan helloReply
		r     helloReply
	}
	actArm struct {
		worker         string
		session, timer uint64
		after          time.Duration
	}
	actDisarm struct{ worker string }
	// actPersist writes rec as pending, or moves it to finished.
	actPersist struct {
		inv      *Invocation // a snapshot
		finished bool
	}
	// actAccepted replies to Submit once the batch is committed.
	actAccepted struct {
		inv   *Invocation
		reply chan error
	}
	actReply struct {
		reply chan error
		err   error
	}
	actWarmed struct {
		reply chan int
		n     int
	}
	// actDone counts a finished invocation in the metrics and releases its waiters.
	actDone     struct{ inv *Invocation }
	actRelease  struct{ inv *Invocation } // releases waiters only (the invocation stays pending in the store)
	actGiveBack struct{ id string }       // a shared queue's invocation no worker here can run (or whose worker was lost): back to the queue
	actStarted  struct{ inv *Invocation } // a shared queue's invocation started here: every instance says running
	actRecord   struct{ inv *Invocation } // the Recorder, once the timeline is complete
	actState    struct{ change state.Change }
	actClosed   struct{ ch chan struct{} }
)

// machineConfig is Config with defaults applied, plus what the machine
// needs to know of the controllers.
type machineConfig struct {
	MaxBooting, MaxAttempts, MaxBootFailures int
	PowerUpTimeout, JobTimeout, IdleTimeout  time.Duration
	PowerOffHoldoff                          time.Duration
	// FirstIdle is how long a freshly connected worker waits for a job.
	FirstIdle time.Duration
	// JobGrace is added to an invocation's timeout before a worker that
	// sends no result is declared lost.
	JobGrace time.Duration
	// ReportsExit says, per worker kind, whether its controller reports
	// exits (power.ExitReporter).
	ReportsExit map[string]bool
	// Policy says, per worker kind, what a worker does once its job is
	// done (see afterJob); a kind not listed is cluster.PolicyOff.
	Policy    map[string]cluster.Policy
	Durable   bool // a Store is set
	Services  map[string]map[string]string
	MaxQueue  int
	Functions []string // known before any hello
	// Bundles, if set, names the functions deployed at run time. The
	// machine only calls its Bundle, which does no I/O.
	Bundles Bundles
	// Shared: the Store is a shared queue (queue.go), whose deliveries
	// count attempts: starts are not written ahead.
	Shared bool
}

// durable reports whether a must wait for the store writes emitted before it.
func durable(a action) bool {
	switch a := a.(type) {
	case actPersist, actAccepted, actReply, actDone, actRelease, actRecord:
		return true
	case actSend:
		return a.durable
	}
	return false
}

type worker struct {
	spec      cluster.Worker
	state     state.Name
	since     time.Time
	session   uint64 // counts sessions; events of older ones are ignored
	timer     uint64 // the armed timer; others firing are stale
	poweredOn time.Time
	connected time.Time
	boot      protocol.BootTimes
	logBoot   int // this session's boot in Config.WorkerLogs
	conn      *workerConn
	exited    bool // the controller reported it off while a job ran
	// rebooting: told CmdReboot, and its controller reports exits (QEMU:
	// the guest's reset makes qemu exit), so that exit is the reboot and
	// the worker is powered on again at once.
	rebooting bool
	jobs      int  // jobs started this boot; 0 is a fresh worker
	forcing   bool // a forced PowerOff is under way
	current   *Invocation
	bundles   map[string]bool // digests it holds: its hello's, and its jobs' this session
	// functions are those its last hello listed (its image's): kept while
	// it is off; nil until its first hello (or if it listed none).
	functions    map[string]bool
	ran          []*Invocation // finished this session; recorded when it powers off
	bootFailures int
}

type machine struct {
	cfg     machineConfig
	log     *slog.Logger
	now     time.Time
	queue   []*Invocation
	workers map[string]*worker
	order   []string // inventory order, for deterministic choices
	live    map[string]*Invocation
	// recent keeps the last finished invocations for lookups (a FIFO of
	// recentMax ids).
	recent      map[string]*Invocation
	recentOrder []string
	failures    []Failure
	closed      bool
	drained     chan struct{} // closed once no job runs after shutdown
	allOff      chan struct{} // closed once every worker is off after evPowerOffAll
	acts        []action
	// turn numbers the loop's turns; committed is the last turn whose
	// store writes are on disk.
	turn, committed uint64
	// known are the functions the workers' images hold (Config.Functions
	// and hellos); empty accepts every name. Functions deployed at run
	// time (cfg.Bundles) are known too.
	known map[string]bool
	// archs are the workers' architectures, for deployed functions.
	archs []string
}

type action any

// recentMax bounds the finished invocations kept in memory without a Store.
const recentMax = 10000

// snapshot copies inv for a store write: the loop may change inv again
// before the write is committed.
func snapshot(inv *Invocation) *Invocation {
	c := *inv
	c.done = nil
	return &c
}

// maxFailures bounds the failures Status reports.
const maxFailures = 10

func newMachine(cfg machineConfig, log *slog.Logger, workers []cluster.Worker, now time.Time) *machine {
	m := &machine{cfg: cfg, log: log, now: now, workers: map[string]*worker{}, live: map[string]*Invocation{},
		recent: map[string]*Invocation{}, known: map[string]bool{}}
	for _, f := range cfg.Functions {
		m.known[f] = true
	}
	for _, w := range workers {
		m.workers[w.ID] = &worker{spec: w, state: state.Off, since: now}
		m.order = append(m.order, w.ID)
		if a := workerArch(w); !slices.Contains(m.archs, a) {
			m.archs = append(m.archs, a)
		}
	}
	return m
}

// workerArch is the target name ("x86", "arm") of w's machine: a
// BeagleBone is arm, a VM its vm.arch.
func workerArch(w cluster.Worker) string {
	if w.Kind == cluster.KindBBB {
		return target.ARMv7.Name
	}
	return w.VM.Target().Name
}

// bundle is function's bundle for worker w, nil when function is not
// deployed at run time (for w's architecture).
func (m *machine) bundle(function string, w *worker) *protocol.BundleRef {
	if m.cfg.Bundles == nil {
		return nil
	}
	ref, ok := m.cfg.Bundles.Bundle(function, workerArch(w.spec))
	if !ok {
		return nil
	}
	return &ref
}

// isKnown reports whether function may be submitted: a function of the
// workers' images, one deployed at run time for any of the workers'
// architectures, or any name while the images' functions are unknown.
func (m *machine) isKnown(function string) bool {
	if len(m.known) == 0 || m.known[function] {
		return true
	}
	if m.cfg.Bundles != nil {
		for _, a := range m.archs {
			if _, ok := m.cfg.Bundles.Bundle(function, a); ok {
				return true
			}
		}
	}
	return false
}

// canRun reports whether worker w can run function: one deployed at run
// time for its architecture, or one its last hello listed. A worker that
// has not said hello yet is taken to run whatever the orchestrator knows
// (isKnown: its siblings' images), until its first hello says.
func (m *machine) canRun(w *worker, function string) bool {
	if w.functions == nil {
		return m.isKnown(function)
	}
	return w.functions[function] || m.bundle(function, w) != nil
}

func (m *machine) emit(a action) { m.acts = append(m.acts, a) }

// take returns the actions emitted since the last call.
func (m *machine) take() []action {
	a := m.acts
	m.acts = nil
	return a
}

// current returns the worker an event is about, or nil when the event
// belongs to a session that has ended (a stale event). This is the one
// place that guards against late events.
func (m *machine) current(id string, session uint64) *worker {
	w := m.workers[id]
	if w == nil || w.session != session {
		return nil
	}
	return w
}

// handle applies one event at time now.
func (m *machine) handle(ev any, now time.Time) {
	m.now = now
	switch e := ev.(type) {
	case evSubmit:
		m.submit(e)
	case evAccepted:
		if e.inv.early { // queued at its submit already
			e.inv.early = false
			break
		}
		if m.closed {
			m.abandon(e.inv)
			break
		}
		m.queue = append(m.queue, e.inv)
		m.dispatch()
	case evAcceptFailed:
		if e.inv.early {
			// Its caller was told it was not accepted: drop it if it has
			// not started (one that has runs to its end, unrecorded if the
			// store still fails).
			e.inv.early = false
			if i := slices.Index(m.queue, e.inv); i >= 0 {
				m.queue = slices.Delete(m.queue, i, i+1)
			} else {
				break
			}
		}
		delete(m.live, e.inv.ID)
	case evPulled:
		m.pulled(e.inv)
	case evWithdraw:
		m.withdraw(e.inv, e.why)
	case evWarm:
		m.warm(e)
	case evPowerOn:
		m.poweredOn(e)
	case evPowerOff:
		if w := m.current(e.worker, e.session); w != nil {
			m.forcedOff(w, e.err)
		}
	case evHello:
		m.hello(e)
	case evResult:
		if w := m.current(e.worker, e.session); w != nil {
			m.result(w, e.res)
		}
	case evConnLost:
		if w := m.current(e.worker, e.session); w != nil {
			m.connLost(w, e.err)
		}
	case evExited:
		if w := m.workers[e.worker]; w != nil {
			m.exited(w, e.err)
		}
	case evTimer:
		if w := m.current(e.worker, e.session); w != nil && w.timer == e.timer {
			m.timerFired(w)
		}
	case evShutdown:
		m.shutdown(e)
	case evPowerOffAll:
		m.powerOffAll(e)
	case evCommitted:
		m.committed = max(m.committed, e.turn)
	case evSync:
		m.emit(actClosed{e.done})
	default:
		panic(fmt.Sprintf("orchestrator: unknown event %T", ev))
	}
	m.checkWaiters()
}

func (m *machine) submit(e evSubmit) {
	if m.closed {
		m.emit(actReply{e.reply, ErrClosed})
		return
	}
	if !m.isKnown(e.inv.Function) {
		m.emit(actReply{e.reply, newError(ErrUnknownFunction, "%q: no worker image has it and it is not deployed (deploy it: faas-cli deploy or mforch deploy)", e.inv.Function)})
		return
	}
	if m.cfg.MaxQueue > 0 && len(m.queue) >= m.cfg.MaxQueue {
		m.emit(actReply{e.reply, newError(ErrQueueFull, "%d invocations waiting", len(m.queue))})
		return
	}
	m.live[e.inv.ID] = e.inv
	if m.cfg.Durable {
		// Queued once the write is committed (evAccepted). With workers
		// up and a short queue, the write reserves the first attempt too
		// (see reserve), and the invocation is queued at once: its job may
		// leave before that write is committed (startJob), so a call waits
		// for one commit, not one to accept and one to finish. A crash
		// before the commit loses only a call nobody was answered for
		// (which may have run: the caller retries, as with any
		// unanswered call); once the write is on disk, so is the attempt.
		rec := snapshot(e.inv)
		if len(m.queue) < reserveAhead && m.anyConnected() && !m.cfg.Shared {
			e.inv.reserved, e.inv.reservedTurn = 1, m.turn
			rec.Attempts, rec.Started = 1, m.now
			e.inv.early = true
		}
		m.emit(actPersist{inv: rec})
		m.emit(actAccepted{e.inv, e.reply})
		if e.inv.early {
			m.queue = append(m.queue, e.inv)
			m.dispatch()
		}
		return
	}
	m.queue = append(m.queue, e.inv)
	m.emit(actReply{e.reply, nil})
	m.dispatch()
}

func (m *machine) withdraw(inv *Invocation, why error) {
	for i, q := range m.queue {
		if q == inv {
			m.queue = append(m.queue[:i], m.queue[i+1:]...)
			m.finish(inv, newError(ErrUnavailable, "withdrawn before it ran: %v", why))
			m.emit(actRecord{inv})
			return
		}
	}
}

func (m *machine) warm(e evWarm) {
	started := 0
	if !m.closed {
		for _, id := range m.order {
			if started >= e.n {
				break
			}
			if w := m.workers[id]; w.state == state.Off {
				m.powerOn(w, e.function)
				started++
			}
		}
	}
	m.emit(actWarmed{e.reply, started})
}

// dispatch hands queued jobs to idle workers, then powers on as many off
// workers as the rest of the queue needs, within MaxBooting.
func (m *machine) dispatch() {
	if m.closed {
		return
	}
	if len(m.queue) > 0 && m.allFailed() {
		for _, inv := range m.queue {
			m.finish(inv, newError(ErrUnavailable, "no worker can run it: every worker failed to boot repeatedly (see their console logs and mforch status)"))
			m.emit(actRecord{inv})
		}
		m.queue = nil
		return
	}
	for _, w := range m.idleBySpecialty() {
		if len(m.queue) == 0 {
			break
		}
		i := m.pick(w)
		if i < 0 {
			continue // nothing queued that it can run
		}
		inv := m.queue[i]
		m.queue = slices.Delete(m.queue, i, i+1)
		m.startJob(w, inv)
	}
	booting := 0
	for _, w := range m.workers {
		if w.state == state.Booting {
			booting++
		}
	}
	need := len(m.queue) - booting
	for _, id := range m.order {
		if need <= 0 || booting >= m.cfg.MaxBooting {
			break
		}
		if w := m.workers[id]; w.state == state.Off {
			// The invocation this power-on is for: the booting workers
			// take the queue's head, in order.
			m.powerOn(w, m.queue[booting].Function)
			booting++
			need--
		}
	}
	m.fillPools()
	m.reserve()
	m.giveBack()
}

// idleBySpecialty lists the idle workers, those that can run the fewest
// functions first (a worker whose hello listed none runs any: last), in
// m.order otherwise. Each takes the oldest invocation it can run, so a
// worker that runs only f1 takes the f1 and leaves one that runs f1 and
// f2 free for an f2, where the other order would keep the f2 waiting.
func (m *machine) idleBySpecialty() []*worker {
	var idle []*worker
	for _, id := range m.order {
		if w := m.workers[id]; w.state == state.Idle {
			idle = append(idle, w)
		}
	}
	specialty := func(w *worker) int {
		if w.functions == nil {
			return math.MaxInt
		}
		return len(w.functions)
	}
	slices.SortStableFunc(idle, func(a, b *worker) int { return cmp.Compare(specialty(a), specialty(b)) })
	return idle
}

// fresh reports whether w is one a warm pool counts: booting, or idle
// having run nothing this boot.
func fresh(w *worker) bool {
	return w.state == state.Booting || (w.state == state.Idle && w.jobs == 0)
}

// fillPools powers on workers of each warm-pool kind until it has its
// Pool fresh workers, within MaxBooting. Booting workers count: those the
// queue takes are replaced once they start their job.
func (m *machine) fillPools() {
	if m.closed || m.allOff != nil {
		return
	}
	ready := map[string]int{}
	booting := 0
	for _, w := range m.workers {
		if fresh(w) {
			ready[w.spec.Kind]++
		}
		if w.state == state.Booting {
			booting++
		}
	}
	for _, id := range m.order {
		w := m.workers[id]
		p := m.policy(w)
		if p.Name != cluster.PolicyWarmPool || w.state != state.Off || ready[w.spec.Kind] >= p.Pool || booting >= m.cfg.MaxBooting {
			continue
		}
		m.log.Debug("powering on for the warm pool", "worker", w.spec.ID, "pool", p.Pool)
		m.powerOn(w, "")
		ready[w.spec.Kind]++
		booting++
	}
}

// inPool reports whether idle worker w is one of its kind's warm pool:
// fresh, and without it the pool would be short.
func (m *machine) inPool(w *worker) bool {
	p := m.policy(w)
	if p.Name != cluster.PolicyWarmPool || w.jobs > 0 || m.closed {
		return false
	}
	idle := 0
	for _, o := range m.workers {
		if o.spec.Kind == w.spec.Kind && o.state == state.Idle && o.jobs == 0 {
			idle++
		}
	}
	return idle <= p.Pool
}

// pickAhead is how far into the queue a worker looks for a job whose
// bundle it holds; maxHelloBundles bounds the digests a hello may list.
const (
	pickAhead       = 16
	maxHelloBundles = 64
)

// pick is the index of the queued invocation idle worker w runs next (-1:
// none it can run): the first it can run, unless one of the next few is
// of a function deployed at run time whose bundle w holds already
// (delivered with its boot for that invocation, while another worker took
// the head): that one saves a fetch.
func (m *machine) pick(w *worker) int {
	first := -1
	for i, inv := range m.queue {
		if m.canRun(w, inv.Function) {
			first = i
			break
		}
	}
	if first < 0 || len(w.bundles) == 0 || m.cfg.Bundles == nil {
		return first
	}
	for i, inv := range m.queue[first:min(len(m.queue), first+pickAhead)] {
		if b := m.bundle(inv.Function, w); b != nil && w.bundles[b.Digest] {
			return first + i
		}
	}
	return first
}

// giveBack hands back to a shared queue the invocations that none of this
// orchestrator's workers (not failed, each having said which functions it
// holds) can run, so that another instance runs them at once instead of
// after the ack wait.
func (m *machine) giveBack() {
	if !m.cfg.Shared || len(m.queue) == 0 {
		return
	}
	kept := m.queue[:0]
	for _, inv := range m.queue {
		able := false
		for _, w := range m.workers {
			if w.state != state.Failed && m.canRun(w, inv.Function) {
				able = true
				break
			}
		}
		if able {
			kept = append(kept, inv)
			continue
		}
		m.log.Info("no worker here runs it; given back to the shared queue", "invocation", inv.ID, "function", inv.Function)
		delete(m.live, inv.ID)
		m.emit(actGiveBack{inv.ID})
	}
	clear(m.queue[len(kept):])
	m.queue = kept
}

// reserveAhead is how many invocations at the head of the queue have
// their next attempt written to the Store ahead of their start. It must
// cover what the workers start while a commit is on its way to disk (with
// one P, also while the committer gathers: measured, 64 capped a slow
// disk's commits at about 25 invocations each with 1024 clients), and
// while the queue is shorter than this the accepting write reserves the
// first attempt, saving a write. The price: after a crash, up to this many
// invocations that had not started count one attempt more.
const reserveAhead = 256

// reserve records, for the invocations at the head of the queue, the
// attempt they will start next, before a worker is free for them, while
// any worker is connected. A worker that finishes a job then gets the next
// one at once instead of after a commit: its start is on disk already.
// An invocation reserved but not started when mforch stops counts the
// attempt, so after a restart its attempts say it may have run (never
// fewer starts than happened, at most one more).
func (m *machine) reserve() {
	if !m.cfg.Durable || m.cfg.Shared || len(m.queue) == 0 || !m.anyConnected() {
		return
	}
	for _, inv := range m.queue[:min(len(m.queue), reserveAhead)] {
		if inv.reserved > inv.Attempts {
			continue
		}
		inv.reserved, inv.reservedTurn = inv.Attempts+1, m.turn
		rec := snapshot(inv)
		rec.Attempts, rec.Started = inv.reserved, m.now
		m.emit(actPersist{inv: rec})
	}
}

func (m *machine) anyConnected() bool {
	for _, w := range m.workers {
		if w.state == state.Idle || w.state == state.Working {
			return true
		}
	}
	return false
}

func (m *machine) allFailed() bool {
	for _, w := range m.workers {
		if w.state != state.Failed {
			return false
		}
	}
	return len(m.workers) > 0
}

func (m *machine) setState(w *worker, s state.Name) {
	if w.state == s {
		return
	}
	change := state.Change{Worker: w.spec.ID, From: w.state, To: s, At: m.now}
	if s == state.Working && w.current != nil {
		change.Invocation = w.current.ID
	}
	m.log.Debug("worker state", "worker", w.spec.ID, "from", w.state, "to", s)
	w.state, w.since = s, m.now
	m.emit(actState{change})
}

// arm starts w's one timer; an earlier one is cancelled.
func (m *machine) arm(w *worker, after time.Duration) {
	w.timer++
	m.emit(actArm{w.spec.ID, w.session, w.timer, after})
}

func (m *machine) disarm(w *worker) {
	w.timer++
	m.emit(actDisarm{w.spec.ID})
}

// powerOn starts w's boot, for function if it is set: a queued
// invocation's, or the one a scale-up expects calls for. Its bundle, if it
// was deployed at run time, may travel with the boot.
func (m *machine) powerOn(w *worker, function string) {
	w.session++
	w.poweredOn, w.connected, w.boot = m.now, time.Time{}, protocol.BootTimes{}
	w.exited, w.forcing, w.conn, w.rebooting, w.jobs = false, false, nil, false, 0
	m.setState(w, state.Booting)
	m.arm(w, m.cfg.PowerUpTimeout)
	a := actPowerOn{w: w.spec, session: w.session}
	if function != "" {
		a.bundle = m.bundle(function, w)
	}
	m.emit(a)
}

func (m *machine) poweredOn(e evPowerOn) {
	w := m.current(e.worker, e.session)
	if w == nil || w.state != state.Booting {
		return
	}
	if e.err != nil {
		m.log.Error("power on failed", "worker", w.spec.ID, "err", e.err)
		m.bootFailed(w, e.err.Error())
		return
	}
	m.log.Info("worker powered on", "worker", w.spec.ID)
}

// bootFailed forces a worker that did not come up off and counts the
// failure; forcedOff marks it failed after too many in a row.
func (m *machine) bootFailed(w *worker, why string) {
	w.bootFailures++
	m.log.Warn("worker failed to boot", "worker", w.spec.ID, "why", why, "failures", w.bootFailures)
	m.forceOff(w)
}

// forceOff pulls the plug: Stopping until the controller's PowerOff returns.
func (m *machine) forceOff(w *worker) {
	m.setState(w, state.Stopping)
	m.disarm(w)
	if !w.forcing {
		w.forcing = true
		m.emit(actPowerOff{w.spec, w.session})
	}
	m.dispatch()
}

func (m *machine) forcedOff(w *worker, err error) {
	if err != nil {
		m.log.Error("forced power off failed", "worker", w.spec.ID, "err", err)
	}
	if w.state == state.Off || w.state == state.Failed {
		return
	}
	m.endSession(w)
}

// endSession records that the worker is off (or failed, after too many
// boot failures in a row): events of this session are stale from now on.
func (m *machine) endSession(w *worker) {
	if w.current != nil {
		m.lostJob(w, fmt.Sprintf("worker %s went off mid-job", w.spec.ID))
	}
	s := state.Off
	if w.bootFailures >= m.cfg.MaxBootFailures {
		s = state.Failed
		m.log.Error("worker marked failed: it did not boot several times in a row; check its console log and power", "worker", w.spec.ID)
	}
	m.setState(w, s)
	m.disarm(w)
	w.session++
	w.forcing, w.exited, w.rebooting = false, false, false
	if w.conn != nil {
		m.emit(actClose{w.conn})
		w.conn = nil
	}
	for _, inv := range w.ran {
		inv.PoweredOff = m.now
		m.emit(actRecord{inv})
	}
	w.ran = nil
	m.dispatch()
}

func (m *machine) hello(e evHello) {
	for _, f := range e.functions {
		m.known[f] = true
	}
	w, known := m.workers[e.worker]
	if !known || w.state != state.Booting {
		why := "not in the inventory"
		if known {
			why = "not expected (state " + string(w.state) + ")"
		}
		m.log.Warn("turning away worker", "worker", e.worker, "remote", e.remote, "why", why)
		m.emit(actHelloDone{e.reply, helloReply{}})
		m.emit(actSend{e.conn, protocol.TypeCommand, protocol.Command{Action: protocol.CmdPowerOff}, false})
		m.emit(actClose{e.conn})
		return
	}
	m.log.Info("worker connected", "worker", e.worker, "init_ms", e.boot.InitMS, "connected_ms", e.boot.ConnectedMS)
	w.functions = nil // a hello that lists none: it runs what the others know
	for _, f := range e.functions {
		if w.functions == nil {
			w.functions = make(map[string]bool, len(e.functions))
		}
		w.functions[f] = true
	}
	w.connected, w.boot, w.bootFailures, w.conn, w.logBoot = m.now, e.boot, 0, e.conn, e.logBoot
	w.bundles = map[string]bool{}
	for _, d := range e.bundles[:min(len(e.bundles), maxHelloBundles)] {
		w.bundles[d] = true
	}
	m.emit(actHelloDone{e.reply, helloReply{ok: true, session: w.session}})
	m.idle(w, m.cfg.FirstIdle)
}

// idle makes w wait for a job for at most after, and gives it one if any
// is queued.
func (m *machine) idle(w *worker, after time.Duration) {
	m.setState(w, state.Idle)
	m.arm(w, after)
	m.dispatch()
}

func (m *machine) startJob(w *worker, inv *Invocation) {
	inv.Attempts++
	inv.Worker = w.spec.ID
	inv.PoweredOn, inv.Connected, inv.Boot, inv.LogBoot = w.poweredOn, w.connected, w.boot, w.logBoot
	inv.Started = m.now
	w.current = inv
	w.jobs++
	m.setState(w, state.Working)
	m.arm(w, inv.Timeout+m.cfg.JobGrace)
	// The attempt is on disk before the job leaves, so a restart knows it
	// may have run: reserved in an earlier turn whose commit is done, or
	// written now and the job sent after the commit.
	wait := false
	if m.cfg.Durable && !m.cfg.Shared {
		if inv.reserved < inv.Attempts {
			inv.reserved, inv.reservedTurn = inv.Attempts, m.turn
			m.emit(actPersist{inv: snapshot(inv)})
		}
		// An early invocation's first attempt is in the write that
		// accepts it: nothing is answered before that is on disk.
		wait = inv.reservedTurn > m.committed && !(inv.early && inv.Attempts == 1)
	}
	bundle := m.bundle(inv.Function, w)
	if bundle != nil && w.bundles != nil {
		w.bundles[bundle.Digest] = true // the worker keeps it for its next jobs
	}
	m.emit(actSend{w.conn, protocol.TypeJob, protocol.Job{ID: inv.ID, Function: inv.Function, Args: inv.Args,
		TimeoutMS: inv.Timeout.Milliseconds(), Attempt: inv.Attempts, Services: m.cfg.Services,
		Env: inv.Env, Secrets: inv.Secrets, NowUnixNS: m.now.UnixNano(), Bundle: bundle, HTTP: inv.HTTP}, wait})
	if m.cfg.Shared {
		m.emit(actStarted{snapshot(inv)}) // after the job left: it does not wait for this
	}
}

func (m *machine) result(w *worker, res protocol.Result) {
	inv := w.current
	if w.state != state.Working || inv == nil || res.ID != inv.ID {
		want := ""
		if inv != nil {
			want = inv.ID
		}
		m.connLost(w, fmt.Errorf("result for invocation %q, expected %q", res.ID, want))
		return
	}
	w.current = nil
	inv.Result, inv.TimedOut, inv.ExecMS = res.Result, res.TimedOut, res.ExecMS
	inv.HTTPResponse, inv.Log = res.HTTP, logTail(res.Log)
	var err error
	switch {
	case res.TimedOut:
		err = &Error{Kind: ErrTimeout, Msg: res.Error}
		if res.Error == "" {
			err = newError(ErrTimeout, "timed out after %s", inv.Timeout)
		}
	case res.Error != "":
		err = &Error{Kind: ErrFunction, Msg: res.Error}
	}
	m.finish(inv, err)
	switch {
	case w.exited:
		w.ran = append(w.ran, inv)
		m.endSession(w)
	case res.TimedOut || m.closed:
		// A timed-out function may still hold the worker: it powers
		// itself off (runtime/worker.go), whatever the policy.
		w.ran = append(w.ran, inv)
		m.stop(w)
	case m.cfg.IdleTimeout == 0:
		w.ran = append(w.ran, inv)
		m.afterJob(w)
	default:
		m.emit(actRecord{inv})
		m.emit(actSend{w.conn, protocol.TypeCommand, protocol.Command{Action: protocol.CmdWait}, false})
		m.idle(w, m.cfg.IdleTimeout)
	}
}

// logTail bounds a function log a worker sent to its last
// protocol.MaxLog bytes, starting at a whole UTF-8 character.
func logTail(s string) string {
	if len(s) <= protocol.MaxLog {
		return s
	}
	s = s[len(s)-protocol.MaxLog:]
	for i := 0; i < utf8.UTFMax && len(s) > 0 && !utf8.RuneStart(s[0]); i++ {
		s = s[1:]
	}
	return s
}

// policy is w's kind's policy.
func (m *machine) policy(w *worker) cluster.Policy {
	p := m.cfg.Policy[w.spec.Kind]
	if p.Name == "" {
		p.Name = cluster.PolicyOff
	}
	return p
}

// afterJob ends the boot of a worker whose job is done (one job per boot),
// as its kind's policy says:
//
//	policy               work is queued              the queue is empty
//	off                  power off                   power off
//	reboot-while-queued  reboot: booting at once,    power off
//	                     no holdoff, no power-on
//	warm-pool N          power off                   power off
//
// Powering off waits out PowerOffHoldoff where the controller cannot
// report exits (GPIO boards). warm-pool also keeps N booted workers that
// have run nothing (fillPools), and powers those beyond N off once idle
// for FirstIdle (timerFired).
func (m *machine) afterJob(w *worker) {
	if m.policy(w).Name == cluster.PolicyRebootWhileQueued && len(m.queue) > 0 {
		m.reboot(w)
		return
	}
	m.stop(w)
}

// reboot tells w to reboot and counts it booting at once: a new session
// whose hello is due within PowerUpTimeout (else it is forced off like any
// boot that fails). The jobs it ran are recorded now, their worker's boot
// being over. A board reboots itself; a worker whose controller reports
// exits (QEMU) exits on the reset and is powered on again (exited).
func (m *machine) reboot(w *worker) {
	m.log.Info("rebooting worker for queued work", "worker", w.spec.ID, "queued", len(m.queue))
	m.emit(actSend{w.conn, protocol.TypeCommand, protocol.Command{Action: protocol.CmdReboot}, false})
	m.emit(actClose{w.conn})
	for _, inv := range w.ran {
		inv.PoweredOff = m.now
		m.emit(actRecord{inv})
	}
	w.ran = nil
	m.disarm(w)
	w.session++
	w.poweredOn, w.connected, w.boot = m.now, time.Time{}, protocol.BootTimes{}
	w.exited, w.forcing, w.conn, w.jobs = false, false, nil, 0
	w.rebooting = m.cfg.ReportsExit[w.spec.Kind]
	m.setState(w, state.Booting)
	m.arm(w, m.cfg.PowerUpTimeout)
	m.dispatch()
}

// stop tells a worker to power off. A controller that reports exits ends
// the session when the worker is off (or the worker is forced off after
// the holdoff); for one that cannot (GPIO boards), the worker counts as
// off after the holdoff.
func (m *machine) stop(w *worker) {
	m.setState(w, state.Stopping)
	m.emit(actSend{w.conn, protocol.TypeCommand, protocol.Command{Action: protocol.CmdPowerOff}, false})
	m.arm(w, m.cfg.PowerOffHoldoff)
}

func (m *machine) timerFired(w *worker) {
	switch w.state {
	case state.Booting:
		m.bootFailed(w, fmt.Sprintf("no hello within %s of power-on", m.cfg.PowerUpTimeout))
	case state.Idle:
		if m.inPool(w) {
			m.arm(w, m.cfg.FirstIdle) // still needed: stays ready
			return
		}
		m.stop(w)
	case state.Working:
		m.log.Warn("worker sent no result in time", "worker", w.spec.ID, "invocation", w.current.ID)
		m.lostJob(w, fmt.Sprintf("worker %s sent no result within %s", w.spec.ID, w.current.Timeout+m.cfg.JobGrace))
		m.forceOff(w)
	case state.Stopping:
		if m.cfg.ReportsExit[w.spec.Kind] {
			m.log.Warn("worker did not power off when told; forcing it off", "worker", w.spec.ID)
			m.forceOff(w)
		} else {
			m.endSession(w)
		}
	}
}

func (m *machine) connLost(w *worker, err error) {
	switch w.state {
	case state.Idle, state.Working:
	default:
		return // a stopping worker's connection closes as it goes off
	}
	m.log.Warn("worker connection lost", "worker", w.spec.ID, "state", w.state, "err", err)
	if w.state == state.Working {
		why := fmt.Sprintf("worker %s connection lost mid-job (%v)", w.spec.ID, err)
		if w.exited {
			why = fmt.Sprintf("worker %s went off mid-job", w.spec.ID)
		}
		m.lostJob(w, why)
	}
	if w.exited {
		m.endSession(w)
		return
	}
	m.forceOff(w)
}

func (m *machine) exited(w *worker, err error) {
	switch w.state {
	case state.Stopping, state.Idle:
		m.endSession(w)
	case state.Booting:
		if w.rebooting {
			// The reset of its reboot (QEMU with -no-reboot): power it on
			// again, in the same session, with no holdoff; not once mforch
			// is shutting down.
			w.rebooting = false
			if m.closed {
				m.endSession(w)
				return
			}
			m.log.Debug("worker reset for its reboot; powering it on", "worker", w.spec.ID)
			m.emit(actPowerOn{w: w.spec, session: w.session})
			return
		}
		w.bootFailures++
		m.log.Warn("worker exited while booting", "worker", w.spec.ID, "err", err, "failures", w.bootFailures)
		m.endSession(w)
	case state.Working:
		// The worker may have sent its result just before powering off: the
		// connection delivers it, or its loss, and that ends the session.
		w.exited = true
	}
}

// lostJob requeues the worker's current invocation (at the front, so it
// keeps its place) or fails it once it has used its attempts. From a
// shared queue it is handed back to the queue instead (see below).
func (m *machine) lostJob(w *worker, why string) {
	inv := w.current
	w.current = nil
	if inv == nil {
		return
	}
	m.log.Warn("invocation lost its worker", "invocation", inv.ID, "worker", w.spec.ID, "attempt", inv.Attempts, "why", why)
	if inv.Attempts >= m.cfg.MaxAttempts {
		m.finish(inv, newError(ErrWorkerLost, "%s; gave up after %d attempts", why, inv.Attempts))
		m.emit(actRecord{inv})
		return
	}
	inv.Worker, inv.PoweredOn, inv.Connected, inv.Started = "", time.Time{}, time.Time{}, time.Time{}
	if m.closed {
		m.abandon(inv)
		return
	}
	if m.cfg.Shared {
		// Not started again here: a shared queue counts attempts by its
		// deliveries, and a second start within one delivery would be
		// written nowhere, so if this instance then died the next
		// delivery would count one start too few. Handed back (a nak of a
		// delivery that started, so not counted as unstarted), the
		// redelivery counts this start, and whichever instance has a
		// worker free first retries it. Cost: a round trip to NATS.
		m.log.Info("handed back to the shared queue for its retry", "invocation", inv.ID, "attempts", inv.Attempts)
		delete(m.live, inv.ID)
		m.emit(actGiveBack{inv.ID})
		return
	}
	m.queue = append([]*Invocation{inv}, m.queue...)
}

// finish completes inv: persisted as finished, then its waiters released.
// The caller emits actRecord when the timeline is complete.
func (m *machine) finish(inv *Invocation, err error) {
	inv.Err = err
	inv.Finished = m.now
	if m.cfg.Durable {
		m.emit(actPersist{inv: snapshot(inv), finished: true})
	}
	delete(m.live, inv.ID)
	// Kept for Lookup also with a Store: the finished record is committed
	// only after this turn.
	m.recent[inv.ID] = inv
	m.recentOrder = append(m.recentOrder, inv.ID)
	if len(m.recentOrder) > recentMax {
		delete(m.recent, m.recentOrder[0])
		m.recentOrder = m.recentOrder[1:]
	}
	if err != nil {
		m.failures = append(m.failures, Failure{ID: inv.ID, Function: inv.Function, Worker: inv.Worker,
			Attempts: inv.Attempts, Error: err.Error(), At: inv.Finished})
		if len(m.failures) > maxFailures {
			m.failures = m.failures[1:]
		}
	}
	m.emit(actDone{inv})
}

// abandon releases the waiters of an invocation that will not run in this
// process. With a Store it stays pending for the next start.
func (m *machine) abandon(inv *Invocation) {
	if !m.cfg.Durable {
		m.finish(inv, ErrClosed)
		m.emit(actRecord{inv})
		return
	}
	inv.Err = newError(ErrClosed, "mforch shut down before the invocation finished; it stays queued and runs after the next start")
	delete(m.live, inv.ID)
	m.emit(actRelease{inv})
}

func (m *machine) shutdown(e evShutdown) {
	m.closed = true
	for _, inv := range m.queue {
		m.abandon(inv)
	}
	m.queue = nil
	m.drained = e.drained
}

func (m *machine) powerOffAll(e evPowerOffAll) {
	m.allOff = e.off
	for _, id := range m.order {
		w := m.workers[id]
		if w.state != state.Off && w.state != state.Failed {
			m.forceOff(w)
		}
	}
}

// checkWaiters closes the shutdown's channels once their condition holds.
func (m *machine) checkWaiters() {
	if m.drained != nil && m.running() == 0 {
		m.emit(actClosed{m.drained})
		m.drained = nil
	}
	if m.allOff != nil {
		for _, w := range m.workers {
			if w.state != state.Off && w.state != state.Failed {
				return
			}
		}
		m.emit(actClosed{m.allOff})
		m.allOff = nil
	}
}

func (m *machine) running() int {
	n := 0
	for _, w := range m.workers {
		if w.state == state.Working {
			n++
		}
	}
	return n
}
