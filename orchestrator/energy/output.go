package energy

import (
	"encoding/csv"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/microfaas/microfaas/orchestrator/state"
)

// CSVColumns are the results CSV's energy columns (docs/energy.md, "Outputs"), appended
// after the existing ones.
var CSVColumns = []string{"energy_j", "energy_boot_j", "energy_exec_j", "energy_shutdown_j", "energy_idle_j", "energy_source"}

// CSVFields are an invocation's values for CSVColumns; empty (no energy
// known) if the result does not have the invocation.
func (r *Result) CSVFields(invocation string) []string {
	if r == nil || r.Invocations[invocation] == nil {
		return make([]string, len(CSVColumns))
	}
	e := r.Invocations[invocation]
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', 3, 64) }
	return []string{f(e.TotalJ()), f(e.BootJ), f(e.ExecJ), f(e.ShutdownJ), f(e.IdleJ), r.Source}
}

// Key labels one Prometheus series of microfaas_energy_joules_total.
type Key struct{ Worker, Function, State string }

// ByWorkerFunctionState sums joules per worker, function and state: an
// invocation's boot, exec, shutdown and idle shares go to its function with
// states booting, working, stopping and idle; energy no invocation is
// charged goes to function "" (state "unattributed" for the baseline and
// residual, which belong to no worker).
func (r *Result) ByWorkerFunctionState(function map[string]string) map[Key]float64 {
	out := map[Key]float64{}
	for id, e := range r.Invocations {
		fn := function[id]
		out[Key{e.Worker, fn, string(state.Booting)}] += e.BootJ
		out[Key{e.Worker, fn, string(state.Working)}] += e.ExecJ
		out[Key{e.Worker, fn, string(state.Stopping)}] += e.ShutdownJ
		out[Key{e.Worker, fn, string(state.Idle)}] += e.IdleJ
	}
	out[Key{"", "", "unattributed"}] += r.Unattributed.TotalJ()
	return out
}

// WriteMeterCSV writes the whole-meter samples in the run folder's
// meter.csv form: t_unix_ns,watts,source. Per-board samples (Worker set) go
// to WriteBoardCSV.
func WriteMeterCSV(w io.Writer, samples []Sample) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"t_unix_ns", "watts", "source"})
	for _, s := range samples {
		if s.Worker == "" {
			cw.Write([]string{strconv.FormatInt(s.At.UnixNano(), 10), strconv.FormatFloat(s.Watts, 'f', -1, 64), s.Source})
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteBoardCSV writes per-board samples: t_unix_ns,worker,watts,source.
func WriteBoardCSV(w io.Writer, samples []Sample) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"t_unix_ns", "worker", "watts", "source"})
	for _, s := range samples {
		if s.Worker != "" {
			cw.Write([]string{strconv.FormatInt(s.At.UnixNano(), 10), s.Worker, strconv.FormatFloat(s.Watts, 'f', -1, 64), s.Source})
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteTimelineCSV writes intervals in the run folder's timeline.csv form:
// worker,state,start_unix_ns,end_unix_ns,invocation.
func WriteTimelineCSV(w io.Writer, ivs []Interval) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"worker", "state", "start_unix_ns", "end_unix_ns", "invocation"})
	for _, iv := range ivs {
		cw.Write([]string{iv.Worker, string(iv.State), strconv.FormatInt(iv.Start.UnixNano(), 10), strconv.FormatInt(iv.End.UnixNano(), 10), iv.Invocation})
	}
	cw.Flush()
	return cw.Error()
}

// Summary is a short human-readable account of a result: per-invocation
// joules are left to the caller; this says what the numbers are.
func (r *Result) Summary() string {
	var inv float64
	for _, e := range r.Invocations {
		inv += e.TotalJ()
	}
	s := fmt.Sprintf("energy (%s, %s): %.1f J over %v; %d invocations %.1f J; unattributed %.1f J (baseline %.1f, off %.1f, no-invocation sessions %.1f, residual %.1f)",
		Label(r.Source), r.Source, r.TotalJ, r.End.Sub(r.Start).Round(time.Millisecond), len(r.Invocations), inv,
		r.Unattributed.TotalJ(), r.Unattributed.BaselineJ, r.Unattributed.OffJ, r.Unattributed.OrphanJ, r.Unattributed.ResidualJ)
	if f := r.Fit; f != nil {
		var states []string
		for _, st := range state.On {
			states = append(states, fmt.Sprintf("%s %.2f W", st, f.Model.Watts[st]))
		}
		sort.Strings(states)
		s += fmt.Sprintf("; per-board model (%s): baseline %.2f W, %v; fit residual RMS %.3f W, R² %.4f over %d samples",
			f.Model.Source, f.Model.BaselineWatts, states, f.ResidualRMS, f.R2, f.Samples)
		if len(f.Unidentified) > 0 {
			s += fmt.Sprintf(" (never seen, taken as 0 W: %v)", f.Unidentified)
		}
	}
	return s
}

// Accountant is what the orchestrator keeps for energy: the meter's
// samples and the workers' timeline. Observe is the orchestrator's state
// change callback and Add the meter's emit; both are cheap and never block
// for long. An invocation's energy is final once the session it ran in has
// ended (the worker is off again): Closed hands out those invocations.
type Accountant struct {
	Model *StateModel // calibrated per-state model, if any

	once     sync.Once
	timeline *Timeline
	rec      Recorder

	mu      sync.Mutex
	session map[string][]string // invocations of each worker's current session
	closed  []string
}

func (a *Accountant) init() {
	a.once.Do(func() { a.timeline, a.session = NewTimeline(), map[string][]string{} })
}

// Observe records a worker state change.
func (a *Accountant) Observe(c state.Change) {
	a.init()
	a.timeline.Observe(c)
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case c.To == state.Working && c.Invocation != "":
		a.session[c.Worker] = append(a.session[c.Worker], c.Invocation)
	case c.To == state.Booting || !state.IsOn(c.To):
		// A new boot or off: the previous session is over.
		a.closed = append(a.closed, a.session[c.Worker]...)
		delete(a.session, c.Worker)
	}
}

// Closed returns (and forgets) the invocations whose session has ended since
// the last call: their energy in Result will not change any more except
// through a refit of the per-state model.
func (a *Accountant) Closed() []string {
	a.init()
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.closed
	a.closed = nil
	return out
}

// Add records a meter sample.
func (a *Accountant) Add(s Sample) { a.rec.Add(s) }

// Latest is the time of the newest sample (zero before the first).
func (a *Accountant) Latest() time.Time { return a.rec.Latest() }

// Trim forgets what a long-running orchestrator no longer needs: samples
// and closed intervals before t (each series keeps its last sample at or
// before t, which starts its next interval). It returns the meter's joules
// it dropped, so a running total stays exact. Results then cover only what
// is left: trim only before the start of every session whose invocations
// are not final yet.
func (a *Accountant) Trim(before time.Time) float64 {
	a.init()
	a.timeline.trim(before)
	return a.rec.trim(before)
}

// Samples are the samples so far.
func (a *Accountant) Samples() []Sample { return a.rec.Samples() }

// Intervals are the worker intervals up to until.
func (a *Accountant) Intervals(until time.Time) []Interval {
	a.init()
	return a.timeline.Intervals(until)
}

// Result attributes everything recorded up to until. Its cost grows with
// the history (about 30 ms for an hour at 1 Hz): call it every few seconds
// or at the end of a run, not per sample.
func (a *Accountant) Result(until time.Time) (*Result, error) {
	return Attribute(Input{Samples: a.Samples(), Intervals: a.Intervals(until), Model: a.Model})
}
