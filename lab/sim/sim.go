// Package sim runs an experiment as a discrete-event simulation: the real
// scheduler (orchestrator.Sim, the state machine mforch serve runs) on a
// simulated clock, with simulated workers whose boot, reboot, shutdown and
// execution times and power are drawn from a profile (lab/profile). The
// orchestrator's loop needs goroutines, sockets and controllers, so the
// simulator drives the machine directly: an event queue ordered by time,
// each event handed to the machine, each of its actions turned into the
// events it causes (a boot's hello, a job's result, a shutdown's exit, a
// timer). Arrivals are an experiment file's (poisson, uniform, closed
// loop) or a trace's. The output is a run folder that lab/report reads like
// a measured one, marked simulated in summary.json.
package sim

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/lab/profile"
	"github.com/microfaas/microfaas/lab/report"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/protocol"
)

// ErrConfig is wrapped by errors about what the simulation was given.
var ErrConfig = errors.New("bad simulation")

// Config is one simulation.
type Config struct {
	// Spec gives the functions, invocations, arrivals, seed, mode (warm:
	// IdleTimeout) and timeout.
	Spec *experiment.Spec
	// File is the experiment file, copied into the run folder.
	File    []byte
	Profile *profile.Profile
	// ProfileFile is the profile as given, copied into the run folder.
	ProfileFile []byte
	// Workers is how many workers (of the profile's kind) to simulate.
	Workers int
	// Policy is the workers' power policy.
	Policy cluster.Policy
	// Trace, if set, replaces the spec's arrivals and functions.
	Trace     []TraceCall
	TraceName string
	// Dir is the run folder to create ("": write nothing, for benchmarks).
	Dir string
	// MeterInterval is the simulated meter's sample period (default 1 s).
	MeterInterval time.Duration
	// Start is the simulated clock's start (default 2026-01-01 UTC).
	Start time.Time
	// DrawSeed seeds the profile's draws (default: the spec's seed, which
	// also seeds the arrivals); another DrawSeed keeps the arrivals.
	DrawSeed int64
	// Settle bounds the simulated time after the last invocation returned
	// during which workers may still power off (default 30 s, as
	// mforch experiment).
	Settle time.Duration
}

// Result is what a simulation did.
type Result struct {
	Summary report.Summary
	Events  int           // events handled
	Wall    time.Duration // real time the simulation took
	EnergyJ float64       // the simulated meter's energy, to the last event
	// Refused counts calls the orchestrator refused (its queue was full,
	// Config.MaxQueue 1000): failed, with no results row.
	Refused int
	// OK counts the successful invocations; P50 and P99 are their
	// latencies (queued to finished, ms, nearest rank, as the report's).
	OK       int
	P50, P99 float64
	// JPerInv is the meter's energy from the start to the last invocation's
	// end per successful invocation, as the report's meter J per
	// invocation (0 without a power model).
	JPerInv float64
}

// simulation state
type sim struct {
	cfg     Config
	m       *orchestrator.Sim
	rng     *rand.Rand
	q       eventQueue
	now     int64 // ns since Start
	start   time.Time
	workers []*simWorker
	index   map[string]int
	exit    bool // the profile's kind reports exits (vm)
	execs   map[string]profile.Dist

	// arrivals
	functions   []string // per call
	gaps        []time.Duration
	at          []time.Duration // trace offsets
	next        int             // next call to submit
	lastArrival int64
	planned     int
	done        int
	failed      int
	lastDone    int64
	refused     int
	runJ        float64   // the meter's energy at lastDone
	latency     []float64 // ms, of each successful invocation
	seq         int

	// outputs
	results  *orchestrator.CSVRecorder
	timeline *csv.Writer
	meter    *csv.Writer
	bufs     []*bufio.Writer
	files    []*os.File
	open     []state.Change // each worker's current state, for timeline.csv
	pow      powerMeter
	events   int
}

type simWorker struct {
	id    string
	gen   uint64 // bumped when power is cut or a new boot starts: its pending events are void
	timer uint64 // the armed timer (0: none)
	// rebootAt is when a QEMU worker told to reboot says hello again: its
	// reset is an exit and a power-on, then the rest of the reboot.
	rebootAt int64
	// phys is the state the meter sees: the machine's, but a board whose
	// shutdown is over draws off power while the machine waits out the
	// holdoff.
	phys state.Name
}

// Run simulates cfg and writes its run folder.
func Run(cfg Config) (*Result, error) {
	wall := time.Now()
	s, err := newSim(cfg)
	if err != nil {
		return nil, err
	}
	defer s.closeFiles()
	if err := s.run(); err != nil {
		return nil, err
	}
	sum := s.summary()
	res := &Result{Summary: sum, Events: s.events, EnergyJ: s.pow.total, OK: len(s.latency), Refused: s.refused}
	slices.Sort(s.latency)
	res.P50, res.P99 = report.Percentile(s.latency, 50), report.Percentile(s.latency, 99)
	if res.OK > 0 && s.pow.on {
		res.JPerInv = s.runJ / float64(res.OK)
	}
	res.Wall = time.Since(wall)
	if s.cfg.Dir != "" {
		sum.Simulated.WallSeconds = res.Wall.Seconds()
		res.Summary = sum
		if err := s.flush(); err != nil {
			return nil, err
		}
		b, err := json.MarshalIndent(sum, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(cfg.Dir, report.SummaryFile), append(b, '\n'), 0o644); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func newSim(cfg Config) (*sim, error) {
	if cfg.Spec == nil || cfg.Profile == nil {
		return nil, fmt.Errorf("%w: give an experiment and a profile", ErrConfig)
	}
	if cfg.Workers <= 0 {
		return nil, fmt.Errorf("%w: give the number of workers (--workers N, or workers: qemu: N in the file)", ErrConfig)
	}
	if cfg.MeterInterval <= 0 {
		cfg.MeterInterval = time.Second
	}
	if cfg.Start.IsZero() {
		cfg.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 30 * time.Second
	}
	if cfg.DrawSeed == 0 {
		cfg.DrawSeed = cfg.Spec.Seed
	}
	p := cfg.Profile
	s := &sim{cfg: cfg, start: cfg.Start, index: map[string]int{}, exit: p.Kind == cluster.KindVM,
		rng: rand.New(rand.NewPCG(uint64(cfg.DrawSeed), 0x5117)), execs: map[string]profile.Dist{}}
	var ws []cluster.Worker
	prefix := "vm"
	if p.Kind == cluster.KindBBB {
		prefix = "bbb"
	}
	for i := range cfg.Workers {
		w := cluster.Worker{ID: fmt.Sprintf("%s%d", prefix, i), Kind: p.Kind}
		ws = append(ws, w)
		s.index[w.ID] = i
		s.workers = append(s.workers, &simWorker{id: w.ID, phys: state.Off})
	}
	s.open = make([]state.Change, len(ws))
	ocfg := orchestrator.Config{Cluster: &cluster.Cluster{Workers: ws},
		JobTimeout: time.Duration(cfg.Spec.Timeout)}
	if cfg.Policy.Name != "" {
		ocfg.Policy = map[string]cluster.Policy{p.Kind: cfg.Policy}
	}
	if cfg.Spec.Mode == experiment.Warm {
		ocfg.IdleTimeout = time.Duration(cfg.Spec.Idle)
	}
	var err error
	if s.m, err = orchestrator.NewSim(ocfg, map[string]bool{p.Kind: s.exit}, cfg.Start); err != nil {
		return nil, err
	}
	// The calls: the trace's, or the spec's functions in turn.
	if cfg.Trace != nil {
		if len(cfg.Trace) == 0 {
			return nil, fmt.Errorf("%w: the trace has no calls", ErrConfig)
		}
		for _, c := range cfg.Trace {
			s.functions = append(s.functions, c.Function)
			s.at = append(s.at, c.At)
		}
	} else {
		s.functions = make([]string, cfg.Spec.Invocations)
		for i := range s.functions {
			s.functions[i] = cfg.Spec.Functions[i%len(cfg.Spec.Functions)]
		}
		s.gaps = cfg.Spec.Gaps()
	}
	s.planned = len(s.functions)
	for _, f := range s.functions {
		if _, ok := s.execs[f]; ok {
			continue
		}
		d, ok := p.ExecOf(f)
		if !ok {
			return nil, fmt.Errorf("%w: profile %s has no execution time for %q and no default (add exec: %s: or exec: default:)", ErrConfig, p.Name, f, f)
		}
		s.execs[f] = d
	}
	s.pow = newPowerMeter(p.Power, len(ws), cfg.MeterInterval)
	if cfg.Dir != "" {
		if err := s.createFiles(); err != nil {
			s.closeFiles()
			return nil, err
		}
	}
	return s, nil
}

// Event kinds.
const (
	evArrival = iota
	evPoweredOn
	evPoweredOff
	evHello
	evResult
	evExited
	evTimer
	evHalted // a board's shutdown is over (power only)
)

type event struct {
	at      int64 // ns since start
	seq     uint64
	kind    uint8
	worker  int32
	gen     uint64
	session uint64
	timer   uint64
	inv     *orchestrator.Invocation
	exec    float64 // s, evResult
	timeout bool
	boot    float64 // s, evHello
}

func (s *sim) push(e event) {
	e.seq = s.q.nextSeq()
	s.q.push(e)
}

func (s *sim) t() time.Time { return s.start.Add(time.Duration(s.now)) }

func secs(v float64) int64 { return int64(v * 1e9) }

func (s *sim) run() error {
	if s.gaps == nil && s.at == nil {
		// Closed loop: one caller per worker unless the file says.
		n := s.cfg.Spec.Arrival.Concurrency
		if n <= 0 {
			n = s.cfg.Workers
		}
		for range min(n, s.planned) {
			s.push(event{at: 0, kind: evArrival})
		}
	} else {
		s.push(event{at: s.arrivalAt(0), kind: evArrival})
	}
	settle := int64(s.cfg.Settle)
	for s.q.len() > 0 {
		e := s.q.pop()
		if s.done == s.planned && e.at > s.lastDone+settle {
			break
		}
		if s.done == s.planned && s.allOff() {
			break
		}
		s.pow.advance(s, e.at)
		s.now = e.at
		s.events++
		s.handle(e)
	}
	if s.done < s.planned {
		return fmt.Errorf("simulation stopped with %d of %d invocations finished (no event left): a bug", s.done, s.planned)
	}
	end := max(s.now, s.lastDone)
	s.pow.advance(s, end)
	s.pow.flush(s)
	s.now = end
	for i := range s.workers {
		s.closeInterval(i, s.t())
	}
	return nil
}

func (s *sim) allOff() bool {
	for i := range s.workers {
		if st, _ := s.m.State(s.workers[i].id); st != state.Off && st != state.Failed {
			return false
		}
	}
	return true
}

// arrivalAt is the time of open-loop call i.
func (s *sim) arrivalAt(i int) int64 {
	if s.at != nil {
		return int64(s.at[i])
	}
	var t int64
	if i > 0 {
		t = s.lastArrival + int64(s.gaps[i])
	}
	return t
}

func (s *sim) handle(e event) {
	var acts []orchestrator.SimAction
	w := (*simWorker)(nil)
	if e.kind != evArrival {
		w = s.workers[e.worker]
	}
	now := s.t()
	switch e.kind {
	case evArrival:
		s.arrive(e)
		return
	case evPoweredOn:
		acts = s.m.PoweredOn(w.id, e.session, nil, now)
	case evPoweredOff:
		acts = s.m.PoweredOff(w.id, e.session, now)
	case evHello:
		if e.gen != w.gen {
			return
		}
		ms := e.boot * 1000
		acts, _ = s.m.Hello(w.id, protocol.BootTimes{ConnectedMS: ms}, now)
	case evResult:
		if e.gen != w.gen {
			return
		}
		res := protocol.Result{ID: e.inv.ID, ExecMS: e.exec * 1000, TimedOut: e.timeout}
		if e.timeout {
			res.Error = "simulated: the function ran past its timeout"
		}
		acts = s.m.Result(w.id, e.session, res, now)
	case evExited:
		if e.gen != w.gen {
			return
		}
		acts = s.m.Exited(w.id, now)
	case evTimer:
		if e.timer != w.timer {
			return
		}
		w.timer = 0
		acts = s.m.Timer(w.id, e.session, e.timer, now)
	case evHalted:
		if e.gen == w.gen && w.phys == state.Stopping {
			s.pow.change(w.phys, state.Off)
			w.phys = state.Off
		}
		return
	}
	s.carryOut(acts)
}

func (s *sim) arrive(e event) {
	if s.next >= s.planned {
		return
	}
	i := s.next
	s.next++
	s.seq++
	inv := &orchestrator.Invocation{ID: fmt.Sprintf("sim%08d", s.seq), Function: s.functions[i],
		Timeout: time.Duration(s.cfg.Spec.Timeout), Queued: s.t()}
	if s.gaps != nil || s.at != nil {
		if s.next < s.planned {
			at := s.arrivalAt(s.next)
			s.lastArrival = at
			s.push(event{at: at, kind: evArrival})
		}
	}
	acts, err := s.m.Submit(inv, s.t())
	if err != nil {
		// Refused (queue full): counted like a failed call, as
		// mforch experiment counts an Invoke error; no results row.
		s.failed++
		s.refused++
		s.finished()
		return
	}
	s.carryOut(acts)
}

// finished counts a call's end; a closed-loop caller sends its next.
func (s *sim) finished() {
	s.done++
	s.lastDone = s.now
	s.runJ = s.pow.total
	if s.gaps == nil && s.at == nil && s.next < s.planned {
		s.push(event{at: s.now, kind: evArrival})
	}
}

func (s *sim) carryOut(acts []orchestrator.SimAction) {
	p := s.cfg.Profile
	for _, a := range acts {
		i := int32(-1)
		var w *simWorker
		if a.Worker != "" {
			i = int32(s.index[a.Worker])
			w = s.workers[i]
		}
		switch a.Kind {
		case orchestrator.SimPowerOn:
			w.gen++
			s.push(event{at: s.now, kind: evPoweredOn, worker: i, session: a.Session})
			boot := p.Boot.Draw(s.rng)
			at := s.now + secs(boot)
			if w.rebootAt > 0 {
				// The power-on after a QEMU reboot's reset.
				at = max(w.rebootAt, s.now)
				boot = float64(at-s.now) / 1e9
				w.rebootAt = 0
			}
			s.push(event{at: at, kind: evHello, worker: i, gen: w.gen, boot: boot})
		case orchestrator.SimPowerOff:
			w.gen++
			w.rebootAt = 0
			s.push(event{at: s.now, kind: evPoweredOff, worker: i, session: a.Session})
		case orchestrator.SimJob:
			d := s.execs[a.Inv.Function].Draw(s.rng)
			took := d + p.Overhead.Draw(s.rng)
			e := event{kind: evResult, worker: i, gen: w.gen, session: a.Session, inv: a.Inv, exec: d}
			if t := a.Inv.Timeout.Seconds(); d > t {
				e.timeout, e.exec, took = true, t, t
			}
			e.at = s.now + secs(took)
			s.push(e)
		case orchestrator.SimCommand:
			s.command(i, w, a)
		case orchestrator.SimArm:
			w.timer = a.Timer
			s.push(event{at: s.now + int64(a.After), kind: evTimer, worker: i, session: a.Session, timer: a.Timer})
		case orchestrator.SimDisarm:
			w.timer = 0
		case orchestrator.SimState:
			s.stateChanged(int(i), w, a.Change)
		case orchestrator.SimDone:
			if a.Inv.Err != nil {
				s.failed++
			} else {
				s.latency = append(s.latency, float64(a.Inv.Finished.Sub(a.Inv.Queued))/float64(time.Millisecond))
			}
			s.finished()
		case orchestrator.SimRecord:
			if s.results != nil {
				s.results.Record(a.Inv)
			}
		}
	}
}

func (s *sim) command(i int32, w *simWorker, a orchestrator.SimAction) {
	p := s.cfg.Profile
	switch a.Command {
	case protocol.CmdPowerOff:
		d := secs(p.Shutdown.Draw(s.rng))
		if s.exit {
			s.push(event{at: s.now + d, kind: evExited, worker: i, gen: w.gen})
		} else {
			// The machine counts a board off after the holdoff; the meter
			// sees it off once its shutdown is over.
			s.push(event{at: s.now + d, kind: evHalted, worker: i, gen: w.gen})
		}
	case protocol.CmdReboot:
		d := p.Reboot.Draw(s.rng)
		w.gen++
		if s.exit {
			// QEMU exits on the reset and is powered on again: the hello
			// comes when the reboot is over.
			w.rebootAt = s.now + secs(d)
			s.push(event{at: s.now, kind: evExited, worker: i, gen: w.gen})
		} else {
			s.push(event{at: s.now + secs(d), kind: evHello, worker: i, gen: w.gen, boot: d})
		}
	}
}

func (s *sim) stateChanged(i int, w *simWorker, c state.Change) {
	if w.phys != c.To {
		s.pow.change(w.phys, c.To)
		w.phys = c.To
	}
	s.closeInterval(i, c.At)
	s.open[i] = c
}

// closeInterval writes worker i's open state interval up to end.
func (s *sim) closeInterval(i int, end time.Time) {
	o := s.open[i]
	s.open[i] = state.Change{}
	if s.timeline == nil || o.To == "" || o.To == state.Off || !end.After(o.At) {
		return
	}
	s.timeline.Write([]string{o.Worker, string(o.To), strconv.FormatInt(o.At.UnixNano(), 10), strconv.FormatInt(end.UnixNano(), 10), o.Invocation})
}

func (s *sim) summary() report.Summary {
	spec := s.cfg.Spec
	sum := report.Summary{Name: spec.Name + "-sim", Started: s.start, Finished: s.start.Add(time.Duration(s.lastDone)),
		Planned: s.planned, Done: s.done, Failed: s.failed, Workers: s.cfg.Workers, WorkerKind: "sim",
		Mode: spec.Mode, Arrival: spec.Arrival.Process, Rate: spec.Arrival.Rate, Seed: spec.Seed,
		Functions: spec.Functions, Meter: "none",
		Simulated: &report.SimFacts{Profile: s.cfg.Profile.Name, ProfileSource: s.cfg.Profile.Source,
			ProfileKind: s.cfg.Profile.Kind, Policy: s.cfg.Policy.String(), Events: s.events,
			SimulatedSeconds: time.Duration(s.now).Seconds()},
	}
	if spec.Arrival.Process == experiment.ClosedLoop && s.at == nil {
		sum.Rate = 0
		sum.Concurrency = spec.Arrival.Concurrency
		if sum.Concurrency <= 0 {
			sum.Concurrency = s.cfg.Workers
		}
	}
	if s.at != nil {
		sum.Arrival, sum.Rate, sum.Functions = "trace", 0, uniq(s.functions)
		sum.Simulated.Trace = s.cfg.TraceName
	}
	if spec.Mode == experiment.Warm {
		sum.Idle = time.Duration(spec.Idle).String()
	}
	if s.cfg.Profile.Power.Has() {
		sum.Meter = "sim"
	}
	return sum
}

func uniq(v []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, f := range v {
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}
