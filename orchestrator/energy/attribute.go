package energy

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/microfaas/microfaas/orchestrator/state"
)

// Errors from Attribute; test with errors.Is.
var (
	ErrNoSamples      = errors.New("energy: fewer than two power samples: the meter produced no interval to integrate")
	ErrUnidentifiable = errors.New("energy: the run's data cannot separate the per-state power of a board")
)

// StateModel is the power of one board in each state above the power with
// every board off, plus that baseline (switch, orchestrator, off boards). It
// comes from a least-squares fit over a run (Fit) or from calibration.
type StateModel struct {
	Source        string                 `yaml:"source"`         // "fit", "calibration", ...
	BaselineWatts float64                `yaml:"baseline_watts"` // all boards off
	Watts         map[state.Name]float64 `yaml:"watts"`          // per board, by state, above off
}

// Fit is the least-squares estimate of per-state board power from a run,
// with its error.
type Fit struct {
	Model        StateModel
	ResidualRMS  float64      // watts, time-weighted
	R2           float64      // of the meter's power
	Samples      int          // intervals used
	Unidentified []state.Name // states never seen in the run: power taken as 0
}

// InvocationEnergy is the energy attributed to one invocation.
type InvocationEnergy struct {
	Invocation string
	Worker     string  // worker of its (last) exec
	BootJ      float64 // its share of the boot of the session it ran in
	ExecJ      float64 // while working on it
	ShutdownJ  float64 // its share of the session's shutdown
	IdleJ      float64 // its share of the session's idle time
}

// TotalJ is the invocation's joules.
func (e InvocationEnergy) TotalJ() float64 { return e.BootJ + e.ExecJ + e.ShutdownJ + e.IdleJ }

// Unattributed is the part of the meter's energy no invocation is charged.
type Unattributed struct {
	BaselineJ float64 // constant power: switch, orchestrator, host idle (and off boards, with one meter for all)
	OffJ      float64 // boards off, when each board has its own meter
	OrphanJ   float64 // sessions (boot..shutdown) that ran no invocation
	ResidualJ float64 // measured minus model: what the per-state model does not explain
}

// TotalJ is the unattributed joules.
func (u Unattributed) TotalJ() float64 { return u.BaselineJ + u.OffJ + u.OrphanJ + u.ResidualJ }

// Result is a run's energy, attributed.
type Result struct {
	Source       string // the meter's source; outputs say "model" when IsModel
	Start, End   time.Time
	TotalJ       float64                           // the meter's energy over [Start, End]
	Fit          *Fit                              // set when one meter covered many boards
	Workers      map[string]map[state.Name]float64 // joules per worker per state
	Invocations  map[string]*InvocationEnergy
	Unattributed Unattributed
}

// Input is what Attribute needs.
type Input struct {
	// Samples of every series: Worker "" is the meter covering everything
	// (strip or host); Worker set is a per-board meter (hwmon, CPU-time model).
	Samples []Sample
	// Intervals of every worker's states.
	Intervals []Interval
	// Model, if set, is used instead of fitting (a calibration).
	Model *StateModel
}

// segment is a span of constant power.
type segment struct {
	start, end time.Time
	watts      float64
}

func (s segment) dt() float64 { return s.end.Sub(s.start).Seconds() }

// segments turns one series' samples into spans of constant power.
func segments(samples []Sample) []segment {
	s := append([]Sample(nil), samples...)
	sort.SliceStable(s, func(i, j int) bool { return s[i].At.Before(s[j].At) })
	var out []segment
	for i := 1; i < len(s); i++ {
		if s[i].At.After(s[i-1].At) {
			out = append(out, segment{s[i-1].At, s[i].At, s[i].Watts})
		}
	}
	return out
}

// overlap is the seconds [a,b) and [c,d) share.
func overlap(a, b, c, d time.Time) float64 {
	if c.After(a) {
		a = c
	}
	if d.Before(b) {
		b = d
	}
	if !b.After(a) {
		return 0
	}
	return b.Sub(a).Seconds()
}

// integrate is the joules of segs over [a,b).
func integrate(segs []segment, a, b time.Time) float64 {
	// segs are sorted; find the first that ends after a.
	i := sort.Search(len(segs), func(i int) bool { return segs[i].end.After(a) })
	var j float64
	for ; i < len(segs) && segs[i].start.Before(b); i++ {
		j += segs[i].watts * overlap(a, b, segs[i].start, segs[i].end)
	}
	return j
}

// Attribute splits the meter's energy into per-worker, per-state joules and
// per-invocation joules; what no invocation is charged is Unattributed, so
// that the invocations' TotalJ plus Unattributed.TotalJ equal TotalJ.
func Attribute(in Input) (*Result, error) {
	series := map[string][]Sample{}
	source := ""
	for _, s := range in.Samples {
		series[s.Worker] = append(series[s.Worker], s)
		if source == "" || s.Worker == "" {
			source = s.Source
		}
	}
	intervals := append([]Interval(nil), in.Intervals...)
	sortIntervals(intervals)

	res := &Result{Source: source, Workers: map[string]map[state.Name]float64{}, Invocations: map[string]*InvocationEnergy{}}
	perBoard := map[string][]segment{}
	for w, s := range series {
		if w != "" {
			perBoard[w] = segments(s)
		}
	}
	whole := segments(series[""])

	// The window is the whole meter's span, or else the union of the boards'.
	var total float64
	switch {
	case len(whole) > 0:
		res.Start, res.End = whole[0].start, whole[len(whole)-1].end
		total = integrate(whole, res.Start, res.End)
	case len(perBoard) > 0:
		for _, segs := range perBoard {
			if len(segs) == 0 {
				continue
			}
			if res.Start.IsZero() || segs[0].start.Before(res.Start) {
				res.Start = segs[0].start
			}
			if segs[len(segs)-1].end.After(res.End) {
				res.End = segs[len(segs)-1].end
			}
		}
		for _, segs := range perBoard {
			total += integrate(segs, res.Start, res.End)
		}
	}
	if !res.End.After(res.Start) {
		return nil, ErrNoSamples
	}
	res.TotalJ = total
	for i := range intervals {
		if intervals[i].End.IsZero() {
			intervals[i].End = res.End
		}
	}

	// Joules of one interval.
	var joules func(iv Interval) float64
	if len(perBoard) > 0 {
		// Per-board meters: measure each board directly.
		joules = func(iv Interval) float64 {
			a, b := clip(iv, res.Start, res.End)
			return integrate(perBoard[iv.Worker], a, b)
		}
	} else {
		model := in.Model
		fit, err := fitModel(whole, intervals)
		if model == nil {
			if err != nil {
				return nil, err
			}
			model = &fit.Model
		} else if fit != nil {
			// Report how well the given model explains this run.
			fit.Model = *model
			fit.ResidualRMS, fit.R2 = modelError(whole, intervals, *model)
		}
		res.Fit = fit
		joules = func(iv Interval) float64 {
			a, b := clip(iv, res.Start, res.End)
			if !b.After(a) {
				return 0
			}
			return model.Watts[iv.State] * b.Sub(a).Seconds()
		}
		res.Unattributed.BaselineJ = model.BaselineWatts * res.End.Sub(res.Start).Seconds()
	}

	// Per worker and state, and per session.
	var boards float64
	for _, ivs := range byWorker(intervals) {
		for _, sess := range sessions(ivs) {
			over := map[state.Name]float64{}
			invs := []string{}
			seen := map[string]bool{}
			for _, iv := range sess {
				j := joules(iv)
				boards += j
				w := res.Workers[iv.Worker]
				if w == nil {
					w = map[state.Name]float64{}
					res.Workers[iv.Worker] = w
				}
				w[iv.State] += j
				switch {
				case iv.State == state.Working && iv.Invocation != "":
					e := res.Invocations[iv.Invocation]
					if e == nil {
						e = &InvocationEnergy{Invocation: iv.Invocation}
						res.Invocations[iv.Invocation] = e
					}
					e.Worker = iv.Worker
					e.ExecJ += j
					if !seen[iv.Invocation] {
						seen[iv.Invocation] = true
						invs = append(invs, iv.Invocation)
					}
				case iv.State == state.Off || !state.IsOn(iv.State):
					res.Unattributed.OffJ += j
				default:
					over[iv.State] += j
				}
			}
			if len(invs) == 0 {
				for _, j := range over {
					res.Unattributed.OrphanJ += j
				}
				continue
			}
			k := float64(len(invs))
			for _, id := range invs {
				e := res.Invocations[id]
				e.BootJ += over[state.Booting] / k
				e.IdleJ += over[state.Idle] / k
				e.ShutdownJ += over[state.Stopping] / k
				// A working interval with no invocation id counts as idle.
				e.IdleJ += over[state.Working] / k
			}
		}
	}
	if len(perBoard) > 0 {
		// Whatever the boards' meters did not see while their intervals ran
		// (before a board's first interval, after its last) and the host's
		// own draw when a whole meter is present.
		res.Unattributed.BaselineJ = total - boards
	} else {
		res.Unattributed.ResidualJ = total - res.Unattributed.BaselineJ - boards
	}
	return res, nil
}

func clip(iv Interval, start, end time.Time) (time.Time, time.Time) {
	a, b := iv.Start, iv.End
	if a.Before(start) {
		a = start
	}
	if b.After(end) {
		b = end
	}
	return a, b
}

func byWorker(ivs []Interval) [][]Interval {
	var out [][]Interval
	for i := 0; i < len(ivs); {
		j := i
		for j < len(ivs) && ivs[j].Worker == ivs[i].Worker {
			j++
		}
		out = append(out, ivs[i:j])
		i = j
	}
	return out
}

// sessions splits one worker's intervals into power sessions: each starts
// at a boot (or the first on-state) and ends at off. Off intervals form
// sessions of their own (they carry no invocation, so they stay off).
func sessions(ivs []Interval) [][]Interval {
	var out [][]Interval
	var cur []Interval
	flush := func() {
		if len(cur) > 0 {
			out = append(out, cur)
			cur = nil
		}
	}
	for _, iv := range ivs {
		switch {
		case !state.IsOn(iv.State):
			flush()
			out = append(out, []Interval{iv})
		case iv.State == state.Booting:
			flush()
			cur = append(cur, iv)
		default:
			cur = append(cur, iv)
		}
	}
	flush()
	return out
}

// counts is, for each segment, the time-averaged number of boards in each
// on-state.
func counts(segs []segment, ivs []Interval) [][]float64 {
	out := make([][]float64, len(segs))
	for i := range out {
		out[i] = make([]float64, len(state.On))
	}
	for _, iv := range ivs {
		col := -1
		for c, s := range state.On {
			if iv.State == s {
				col = c
			}
		}
		if col < 0 {
			continue
		}
		i := sort.Search(len(segs), func(i int) bool { return segs[i].end.After(iv.Start) })
		for ; i < len(segs) && segs[i].start.Before(iv.End); i++ {
			out[i][col] += overlap(iv.Start, iv.End, segs[i].start, segs[i].end) / segs[i].dt()
		}
	}
	return out
}

// fitModel estimates baseline and per-state power by weighted least
// squares: each segment's power regressed on the number of boards in each
// on-state, plus a constant, weighted by the segment's duration.
func fitModel(segs []segment, ivs []Interval) (*Fit, error) {
	if len(segs) == 0 {
		return nil, ErrNoSamples
	}
	n := counts(segs, ivs)
	// Columns: constant, then each on-state seen in the run.
	cols := []int{}
	var unseen []state.Name
	for c, s := range state.On {
		any := false
		for i := range n {
			if n[i][c] > 0 {
				any = true
				break
			}
		}
		if any {
			cols = append(cols, c)
		} else {
			unseen = append(unseen, s)
		}
	}
	p := len(cols) + 1
	if len(segs) < p+1 {
		return nil, fmt.Errorf("%w: %d samples for %d unknowns; record longer or run `mforch meter calibrate`", ErrUnidentifiable, len(segs), p)
	}
	row := func(i int) []float64 {
		x := make([]float64, p)
		x[0] = 1
		for k, c := range cols {
			x[k+1] = n[i][c]
		}
		return x
	}
	a := make([][]float64, p)
	for i := range a {
		a[i] = make([]float64, p+1)
	}
	for i, sg := range segs {
		x, w := row(i), sg.dt()
		for r := 0; r < p; r++ {
			for c := 0; c < p; c++ {
				a[r][c] += w * x[r] * x[c]
			}
			a[r][p] += w * x[r] * sg.watts
		}
	}
	beta, err := solve(a)
	if err != nil {
		return nil, err
	}
	m := StateModel{Source: "fit", BaselineWatts: beta[0], Watts: map[state.Name]float64{}}
	for _, s := range state.On {
		m.Watts[s] = 0
	}
	for k, c := range cols {
		m.Watts[state.On[c]] = beta[k+1]
	}
	f := &Fit{Model: m, Samples: len(segs), Unidentified: unseen}
	f.ResidualRMS, f.R2 = modelError(segs, ivs, m)
	return f, nil
}

// modelError is the time-weighted RMS residual and R² of m on the run.
func modelError(segs []segment, ivs []Interval, m StateModel) (rms, r2 float64) {
	n := counts(segs, ivs)
	var sw, swy float64
	for _, sg := range segs {
		sw += sg.dt()
		swy += sg.dt() * sg.watts
	}
	mean := swy / sw
	var ssRes, ssTot float64
	for i, sg := range segs {
		pred := m.BaselineWatts
		for c, s := range state.On {
			pred += m.Watts[s] * n[i][c]
		}
		ssRes += sg.dt() * (sg.watts - pred) * (sg.watts - pred)
		ssTot += sg.dt() * (sg.watts - mean) * (sg.watts - mean)
	}
	rms = math.Sqrt(ssRes / sw)
	r2 = 1
	if ssTot > 0 {
		r2 = 1 - ssRes/ssTot
	}
	return rms, r2
}

// solve solves the augmented system a (p rows, p+1 columns) by Gaussian
// elimination with partial pivoting.
func solve(a [][]float64) ([]float64, error) {
	p := len(a)
	scale := 0.0
	for i := range a {
		scale = math.Max(scale, math.Abs(a[i][i]))
	}
	for c := 0; c < p; c++ {
		piv := c
		for r := c + 1; r < p; r++ {
			if math.Abs(a[r][c]) > math.Abs(a[piv][c]) {
				piv = r
			}
		}
		if math.Abs(a[piv][c]) <= 1e-9*scale {
			return nil, fmt.Errorf("%w: two states always occur together (collinear); vary the load or run `mforch meter calibrate`", ErrUnidentifiable)
		}
		a[c], a[piv] = a[piv], a[c]
		for r := c + 1; r < p; r++ {
			f := a[r][c] / a[c][c]
			for k := c; k <= p; k++ {
				a[r][k] -= f * a[c][k]
			}
		}
	}
	x := make([]float64, p)
	for r := p - 1; r >= 0; r-- {
		s := a[r][p]
		for k := r + 1; k < p; k++ {
			s -= a[r][k] * x[k]
		}
		x[r] = s / a[r][r]
	}
	return x, nil
}
