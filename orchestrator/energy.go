package orchestrator

import (
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// Energy accounting (docs/energy.md). With Config.Energy set, the
// orchestrator feeds every worker state change to the Accountant (the
// caller runs the meter into its Add), attributes the meter's energy every
// EnergyEvery, and gives each invocation its joules once they are final:
// when the worker that ran it has gone off again and the meter has
// reported past that moment (its shutdown share is known only then). Until
// then the invocation's Recorder row is held back, so the results CSV's
// energy columns are always the final ones.

// InvocationEnergy is an invocation's energy in the API
// (GET /invocations/{id}) and the results CSV.
type InvocationEnergy struct {
	Joules    float64 `json:"joules"`
	BootJ     float64 `json:"boot_j"`
	ExecJ     float64 `json:"exec_j"`
	ShutdownJ float64 `json:"shutdown_j"`
	IdleJ     float64 `json:"idle_j"`
	Source    string  `json:"source"` // e.g. "measured:wattsup", "model:cpu-time"
	Kind      string  `json:"kind"`   // "model" or "measured" (energy.Label)
}

// csvFields are the values of energy.CSVColumns; empty for nil.
func (e *InvocationEnergy) csvFields() []string {
	if e == nil {
		return make([]string, len(energy.CSVColumns))
	}
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', 3, 64) }
	return []string{f(e.Joules), f(e.BootJ), f(e.ExecJ), f(e.ShutdownJ), f(e.IdleJ), e.Source}
}

// Defaults of the energy options.
const (
	defaultEnergyEvery = 5 * time.Second
	defaultEnergyWait  = 5 * time.Second
	defaultEnergyKeep  = time.Hour
	// attribution may use at most 1/energyBudget of a core: a Result that
	// took d delays the next one by at least energyBudget*d (its cost grows
	// with the run's history).
	energyBudget = 200
)

// energyBook is the orchestrator's energy state.
type energyBook struct {
	acc          *energy.Accountant
	every, wait  time.Duration
	keep         time.Duration
	clock        clock.Clock
	log          *slog.Logger
	recorder     Recorder
	setEnergy    func(inv *Invocation, e *InvocationEnergy) // under the orchestrator's lock
	joules       *prometheus.CounterVec
	meterJ       *prometheus.GaugeVec
	unattributed *prometheus.GaugeVec

	mu         sync.Mutex
	held       map[string]*heldRow // finished invocations waiting for their energy
	lastOff    map[string]time.Time
	session    map[string]time.Time // power-on of each worker that is on
	lastChange time.Time
	latest     *energy.Result
	// Running totals: the meter's joules trimmed from the history, and the
	// joules of invocations made final (final: their ids, while the
	// history still holds them).
	trimmedJ, finalJ float64
	trimmedTo        time.Time
	final            map[string]bool
	stop, done       chan struct{}

	// The CPU attribution took (measured on its own thread), for the log.
	started   time.Time
	cpu, wall time.Duration
	rounds    int
	finished  chan struct{} // closed when finish is done: cpu and wall are final
}

// heldRow is a finished invocation whose energy is not final yet.
type heldRow struct {
	inv       *Invocation
	worker    string
	poweredOn time.Time // start of the session it ran in
	closed    time.Time // when its worker went off after it; zero: still up
}

func newEnergyBook(o *Orchestrator) *energyBook {
	b := &energyBook{acc: o.cfg.Energy, every: o.cfg.EnergyEvery, wait: o.cfg.EnergyWait, keep: o.cfg.EnergyKeep, clock: o.clock,
		log: o.log, recorder: o.cfg.Recorder, held: map[string]*heldRow{}, lastOff: map[string]time.Time{},
		session: map[string]time.Time{}, final: map[string]bool{},
		stop: make(chan struct{}), done: make(chan struct{}), finished: make(chan struct{})}
	if b.every <= 0 {
		b.every = defaultEnergyEvery
	}
	if b.wait <= 0 {
		b.wait = defaultEnergyWait
	}
	if b.keep <= 0 {
		b.keep = defaultEnergyKeep
	}
	b.setEnergy = func(inv *Invocation, e *InvocationEnergy) {
		o.mu.Lock()
		inv.energy = e
		o.mu.Unlock()
	}
	b.joules = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "microfaas_energy_joules_total",
		Help: "Energy attributed to invocations, by worker, function and state (booting, working, stopping, idle); " +
			"kind model means the numbers come from a power model, not a meter. Each invocation is added once its energy is final.",
	}, []string{"worker", "function", "state", "kind"})
	b.meterJ = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "microfaas_energy_meter_joules",
		Help: "Energy the meter reported since mforch started (kind model: a power model, not a measurement).",
	}, []string{"kind"})
	b.unattributed = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "microfaas_energy_unattributed_joules",
		Help: "Part of the meter's energy no invocation is charged: baseline (switch, orchestrator, host idle), " +
			"boards off, boots that ran nothing, model residual.",
	}, []string{"kind"})
	o.metrics.reg.MustRegister(b.joules, b.meterJ, b.unattributed)
	return b
}

// observe takes a worker state change (from the loop).
func (b *energyBook) observe(c state.Change) {
	b.acc.Observe(c)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastChange = c.At
	if c.To == state.Booting {
		b.session[c.Worker] = c.At
	}
	if c.To != state.Off && c.To != state.Failed {
		return
	}
	delete(b.session, c.Worker)
	b.lastOff[c.Worker] = c.At
	for _, h := range b.held {
		if h.worker == c.Worker && h.closed.IsZero() {
			h.closed = c.At
		}
	}
}

// record takes a finished invocation in the Recorder's place.
func (b *energyBook) record(inv *Invocation) {
	if inv.Worker == "" || inv.Started.IsZero() {
		// It never ran: no energy to wait for.
		b.write(inv)
		return
	}
	h := &heldRow{inv: inv, worker: inv.Worker, poweredOn: inv.PoweredOn, closed: inv.PoweredOff}
	b.mu.Lock()
	if off := b.lastOff[h.worker]; h.closed.IsZero() && off.After(inv.Finished) {
		h.closed = off // the worker went off before the row got here
	}
	b.held[inv.ID] = h
	b.mu.Unlock()
}

func (b *energyBook) write(inv *Invocation) {
	if b.recorder != nil {
		b.recorder.Record(inv)
	}
}

// run attributes energy every b.every until stopped. It keeps its OS
// thread so that the thread's CPU time is the attribution's own.
func (b *energyBook) run() {
	defer close(b.done)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.started = time.Now()
	next := b.every
	for clock.Sleep(b.clock, next, b.stop) {
		c0 := threadCPU()
		b.settle(b.clock.Now(), false)
		used := threadCPU() - c0
		b.cpu += used
		b.rounds++
		next = max(b.every, energyBudget*used)
	}
}

// threadCPU is the calling OS thread's CPU time (user + system).
func threadCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_THREAD, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// settle attributes everything up to now and hands out the invocations
// whose energy is final (all of them if final is set: the run is over).
func (b *energyBook) settle(now time.Time, final bool) {
	res, err := b.acc.Result(now)
	if err != nil {
		if final {
			b.log.Warn("energy: no attribution at shutdown; invocations are recorded without energy", "err", err)
		} else {
			b.log.Debug("energy: not attributable yet", "err", err)
		}
	}
	b.mu.Lock()
	if res != nil {
		b.latest = res
	}
	var ready []*heldRow
	for id, h := range b.held {
		if final || (res != nil && !h.closed.IsZero() && !res.End.Before(h.closed)) {
			ready = append(ready, h)
			delete(b.held, id)
		}
	}
	b.mu.Unlock()
	for _, h := range ready {
		if res != nil {
			if e := res.Invocations[h.inv.ID]; e != nil {
				ie := &InvocationEnergy{Joules: e.TotalJ(), BootJ: e.BootJ, ExecJ: e.ExecJ, ShutdownJ: e.ShutdownJ,
					IdleJ: e.IdleJ, Source: res.Source, Kind: energy.Label(res.Source)}
				b.setEnergy(h.inv, ie)
				fn := h.inv.Function
				b.joules.WithLabelValues(e.Worker, fn, string(state.Booting), ie.Kind).Add(e.BootJ)
				b.joules.WithLabelValues(e.Worker, fn, string(state.Working), ie.Kind).Add(e.ExecJ)
				b.joules.WithLabelValues(e.Worker, fn, string(state.Stopping), ie.Kind).Add(e.ShutdownJ)
				b.joules.WithLabelValues(e.Worker, fn, string(state.Idle), ie.Kind).Add(e.IdleJ)
				b.finalJ += ie.Joules
				b.final[h.inv.ID] = true
			}
			if final && (h.closed.IsZero() || res.End.Before(h.closed)) {
				b.log.Warn("energy: the meter did not report past the invocation's power-off; its energy is partial",
					"invocation", h.inv.ID, "meter_until", res.End, "powered_off", h.closed)
			}
		}
		b.write(h.inv)
	}
	if res == nil {
		return
	}
	// The meter's total since the start, and the part no invocation is
	// charged: not the final invocations' (as written), nor the others'
	// so far; so joules_total + unattributed = meter.
	var pending float64
	for id, e := range res.Invocations {
		if !b.final[id] {
			pending += e.TotalJ()
		}
	}
	for id := range b.final {
		if res.Invocations[id] == nil {
			delete(b.final, id) // trimmed from the history
		}
	}
	kind := energy.Label(res.Source)
	meter := b.trimmedJ + res.TotalJ
	b.meterJ.WithLabelValues(kind).Set(meter)
	b.unattributed.WithLabelValues(kind).Set(meter - b.finalJ - pending)
	if !final {
		b.trim(now)
	}
}

// trim forgets the history older than b.keep, but never the sessions of
// workers still on or of invocations whose energy is not final.
func (b *energyBook) trim(now time.Time) {
	cut := now.Add(-b.keep)
	b.mu.Lock()
	for _, on := range b.session {
		if on.Before(cut) {
			cut = on
		}
	}
	for _, h := range b.held {
		if !h.poweredOn.IsZero() && h.poweredOn.Before(cut) {
			cut = h.poweredOn
		}
	}
	b.mu.Unlock()
	if cut.After(b.trimmedTo) {
		b.trimmedJ += b.acc.Trim(cut)
		b.trimmedTo = cut
	}
}

// finish runs at shutdown, with every worker off: it waits (up to b.wait)
// until the meter has reported past the last state change, attributes the
// whole run and writes every row still held.
func (b *energyBook) finish() {
	close(b.stop)
	<-b.done
	b.mu.Lock()
	last := b.lastChange
	b.mu.Unlock()
	deadline := time.Now().Add(b.wait)
	for b.acc.Latest().Before(last) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	runtime.LockOSThread()
	c0 := threadCPU()
	b.settle(b.clock.Now(), true)
	b.cpu += threadCPU() - c0
	runtime.UnlockOSThread()
	b.wall = time.Since(b.started)
	close(b.finished)
	b.log.Info("energy: attribution done", "rounds", b.rounds+1, "cpu", b.cpu.Round(time.Microsecond), "over", b.wall.Round(time.Millisecond),
		"cpu_percent_of_a_core", fmt.Sprintf("%.4f", 100*b.cpu.Seconds()/b.wall.Seconds()))
}

// result is the latest attribution (nil before the first).
func (b *energyBook) result() *energy.Result {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.latest
}

// EnergyResult is the latest attribution of the meter's energy (nil without
// Config.Energy or before the meter has produced two samples). It covers
// the history kept (Config.EnergyKeep, and every session not final yet);
// after Shutdown, a run shorter than that whole.
func (o *Orchestrator) EnergyResult() *energy.Result {
	if o.energy == nil {
		return nil
	}
	return o.energy.result()
}

// EnergyCPU is the CPU time energy attribution has used so far and the
// time it has been running (zero without Config.Energy); complete after
// Shutdown.
func (o *Orchestrator) EnergyCPU() (cpu, over time.Duration) {
	if o.energy == nil {
		return 0, 0
	}
	b := o.energy
	select {
	case <-b.finished:
		return b.cpu, b.wall
	default:
		return 0, 0
	}
}

// Energy is an invocation's final energy, or nil while it is not known
// (not finished, its worker still up, the meter not past its power-off, or
// no Config.Energy).
func (o *Orchestrator) Energy(inv *Invocation) *InvocationEnergy {
	o.mu.Lock()
	defer o.mu.Unlock()
	return inv.energy
}
