package orchestrator

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/protocol"
)

// Sim drives the scheduler's state machine (machine.go) for a discrete-
// event simulator (lab/sim) instead of the loop: no goroutines, sockets,
// controllers or clock. The loop cannot run on a fake clock without its
// connections and controllers running as goroutines, so the simulator owns
// time and the simulated workers: it hands Sim each event with its time,
// and carries out the actions Sim returns. The decisions (which worker,
// when to power on, off or reboot, the policies, timeouts, retries) are the
// machine's own, the same code mforch serve runs.
type Sim struct {
	m     *machine
	conns map[*workerConn]string // a hello's connection -> its worker
	acts  []SimAction
}

// SimKind says what a SimAction asks of the simulator.
type SimKind int

// What the machine asks the simulated cluster to do.
const (
	SimPowerOn  SimKind = iota + 1 // power Worker on (Session)
	SimPowerOff                    // force Worker off (Session)
	SimJob                         // Worker runs Inv
	SimCommand                     // Worker is told Command (protocol.CmdPowerOff, CmdReboot, CmdWait)
	SimArm                         // call Timer(Worker, Session, Timer) After from now
	SimDisarm                      // Worker's armed timer is cancelled
	SimState                       // a worker changed state (Change)
	SimDone                        // Inv finished (its caller is answered)
	SimRecord                      // Inv's timeline is complete: its results row
)

// SimAction is one action of the machine, for the simulator (the slices
// Sim's methods return are reused: each is valid until the next call).
// Session is the worker's session the action belongs to; for SimJob and
// SimCommand, the machine's session of the worker once the event was
// handled (after a reboot, the new boot's).
type SimAction struct {
	Kind    SimKind
	Worker  string
	Session uint64
	Timer   uint64
	After   time.Duration
	Command string
	Inv     *Invocation
	Change  state.Change
}

// NewSim returns the machine for cfg's cluster with every worker off at
// start, with the defaults New applies. reportsExit names the worker kinds
// whose controller reports exits (QEMU: Exited after a power-off or a
// reboot's reset); the others (GPIO boards) count as off after the
// power-off holdoff. Only cfg's scheduling fields are read: Cluster,
// Policy, MaxBooting, PowerUpTimeout, JobTimeout, IdleTimeout,
// PowerOffHoldoff, MaxAttempts, MaxBootFailures, MaxQueue, Functions, Log.
func NewSim(cfg Config, reportsExit map[string]bool, start time.Time) (*Sim, error) {
	if cfg.Cluster == nil || len(cfg.Cluster.Workers) == 0 {
		return nil, errors.New("orchestrator: simulation without workers")
	}
	for kind, p := range cfg.Policy {
		if err := checkPolicy(p); err != nil {
			return nil, fmt.Errorf("orchestrator: power policy of worker kind %s: %w", kind, err)
		}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	mc := simMachineConfig(cfg)
	for k, v := range reportsExit {
		mc.ReportsExit[k] = v
	}
	return &Sim{m: newMachine(mc, cfg.Log, cfg.Cluster.Workers, start), conns: map[*workerConn]string{}}, nil
}

// simMachineConfig is the machineConfig New makes of cfg, with the same
// defaults (TestSimConfigAsNew keeps the two equal).
func simMachineConfig(cfg Config) machineConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	defInt(&cfg.MaxBooting, len(cfg.Cluster.Workers))
	def(&cfg.PowerUpTimeout, 60*time.Second)
	def(&cfg.JobTimeout, 120*time.Second)
	def(&cfg.PowerOffHoldoff, 10*time.Second)
	defInt(&cfg.MaxAttempts, 3)
	defInt(&cfg.MaxBootFailures, 3)
	defInt(&cfg.MaxQueue, 1000)
	return machineConfig{
		MaxBooting: cfg.MaxBooting, MaxAttempts: cfg.MaxAttempts, MaxBootFailures: cfg.MaxBootFailures,
		PowerUpTimeout: cfg.PowerUpTimeout, JobTimeout: cfg.JobTimeout, IdleTimeout: cfg.IdleTimeout,
		PowerOffHoldoff: cfg.PowerOffHoldoff, FirstIdle: max(cfg.IdleTimeout, firstIdle), JobGrace: jobGrace,
		ReportsExit: map[string]bool{}, Services: cfg.Cluster.Services,
		MaxQueue: cfg.MaxQueue, Functions: cfg.Functions, Policy: cfg.Policy,
	}
}

// handle applies one event at now and returns its actions.
func (s *Sim) handle(ev any, now time.Time) []SimAction {
	s.m.turn++
	s.m.handle(ev, now)
	s.acts = s.acts[:0]
	for _, a := range s.m.take() {
		s.translate(a)
	}
	return s.acts
}

func (s *Sim) translate(a action) {
	add := func(x SimAction) { s.acts = append(s.acts, x) }
	switch a := a.(type) {
	case actPowerOn:
		add(SimAction{Kind: SimPowerOn, Worker: a.w.ID, Session: a.session})
	case actPowerOff:
		add(SimAction{Kind: SimPowerOff, Worker: a.w.ID, Session: a.session})
	case actArm:
		add(SimAction{Kind: SimArm, Worker: a.worker, Session: a.session, Timer: a.timer, After: a.after})
	case actDisarm:
		add(SimAction{Kind: SimDisarm, Worker: a.worker})
	case actState:
		add(SimAction{Kind: SimState, Worker: a.change.Worker, Change: a.change})
	case actDone:
		add(SimAction{Kind: SimDone, Inv: a.inv})
	case actRecord:
		add(SimAction{Kind: SimRecord, Inv: a.inv})
	case actSend:
		id, ok := s.conns[a.conn]
		if !ok {
			return // a turned-away hello's connection
		}
		x := SimAction{Worker: id, Session: s.m.workers[id].session}
		switch msg := a.msg.(type) {
		case protocol.Job:
			x.Kind, x.Inv = SimJob, s.m.live[msg.ID]
		case protocol.Command:
			x.Kind, x.Command = SimCommand, msg.Action
		default:
			return
		}
		add(x)
	case actClose:
		delete(s.conns, a.conn)
	}
	// The rest answer callers the simulator has not got (replies, store
	// writes, waiters) or need nothing of it (a closed connection).
}

// Submit queues inv at now: the error is the one Submit would return
// (ErrQueueFull, ErrUnknownFunction, ErrClosed), nil once it is queued.
func (s *Sim) Submit(inv *Invocation, now time.Time) ([]SimAction, error) {
	s.m.turn++
	s.m.handle(evSubmit{inv, nil}, now)
	s.acts = s.acts[:0]
	var err error
	for _, a := range s.m.take() {
		if r, ok := a.(actReply); ok {
			err = r.err // without a store the machine replies at once
			continue
		}
		s.translate(a)
	}
	return s.acts, err
}

// PoweredOn: the controller's PowerOn of worker's session returned err.
func (s *Sim) PoweredOn(worker string, session uint64, err error, now time.Time) []SimAction {
	return s.handle(evPowerOn{worker: worker, session: session, err: err}, now)
}

// PoweredOff: a forced PowerOff of worker's session returned.
func (s *Sim) PoweredOff(worker string, session uint64, now time.Time) []SimAction {
	return s.handle(evPowerOff{worker: worker, session: session}, now)
}

// Hello: worker connected with boot times. It reports whether the machine
// accepted it (a worker it does not expect is told to power off).
func (s *Sim) Hello(worker string, boot protocol.BootTimes, now time.Time) ([]SimAction, bool) {
	c := &workerConn{}
	s.conns[c] = worker
	acts := s.handle(evHello{worker: worker, boot: boot, conn: c, reply: make(chan helloReply, 1)}, now)
	w := s.m.workers[worker]
	ok := w != nil && w.conn == c
	if !ok {
		delete(s.conns, c)
	}
	return acts, ok
}

// Result: worker's session sent res.
func (s *Sim) Result(worker string, session uint64, res protocol.Result, now time.Time) []SimAction {
	return s.handle(evResult{worker: worker, session: session, res: res}, now)
}

// Exited: worker's controller saw it go off (QEMU exited).
func (s *Sim) Exited(worker string, now time.Time) []SimAction {
	return s.handle(evExited{worker: worker}, now)
}

// Timer: the timer a SimArm asked for fired.
func (s *Sim) Timer(worker string, session, timer uint64, now time.Time) []SimAction {
	return s.handle(evTimer{worker: worker, session: session, timer: timer}, now)
}

// Queued is the number of invocations waiting for a worker.
func (s *Sim) Queued() int { return len(s.m.queue) }

// State is worker's state and session.
func (s *Sim) State(worker string) (state.Name, uint64) {
	w := s.m.workers[worker]
	if w == nil {
		return "", 0
	}
	return w.state, w.session
}

// Workers are the workers in inventory order.
func (s *Sim) Workers() []cluster.Worker {
	out := make([]cluster.Worker, 0, len(s.m.order))
	for _, id := range s.m.order {
		out = append(out, s.m.workers[id].spec)
	}
	return out
}
