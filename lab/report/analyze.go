package report

import (
	"math"
	"sort"
	"strings"
	"time"

	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// Analysis is everything the report shows about one run.
type Analysis struct {
	Run *Run
	// Start and End bound the run: the first queued and the last finished
	// invocation (or the summary's times when they are wider).
	Start, End time.Time
	Total, OK  int
	Failed     int
	// PerMinute is successful invocations per minute over the whole run.
	PerMinute float64
	// Throughput is functions per minute in consecutive bins of BinSeconds.
	Throughput []Point
	BinSeconds float64
	All        Stats
	Functions  []Stats // sorted by name
	Workers    []WorkerStats
	// Energy: MeterJ is the meter's energy over the run (0 without
	// samples); JPerInv is MeterJ per successful invocation.
	MeterJ, JPerInv float64
	MeanWatts       float64
	MeterSource     string // meter.csv's sources, comma-separated
	MeterModel      bool   // a meter.csv source starts with "model:"
	// EnergyRows is set when the results CSV has energy columns; then
	// Stats.EnergyJ is the mean joules per invocation from those columns.
	EnergyRows   bool
	EnergyModel  bool   // some row's energy_source starts with "model:"
	EnergySource string // the rows' energy_source values, comma-separated
}

// Point is one (x, y) pair of a series.
type Point struct{ X, Y float64 }

// Stats summarise the successful invocations of one function (or all).
type Stats struct {
	Function      string
	Count, Failed int
	P50, P95, P99 float64 // latency, ms (nearest rank)
	MeanLatency   float64
	// The round trip split into means (ms): waiting for a worker to be
	// free, waiting for the worker's boot, execution on the worker, and
	// the rest (dispatch, protocol, result).
	Wait, Boot, Exec, Overhead float64
	Boots                      int       // invocations that waited for a boot
	CDF                        []Point   // latency ms -> fraction
	EnergyJ                    float64   // mean J per successful invocation (energy columns)
	latencies                  []float64 // sorted
}

// WorkerStats are one worker's share of the run.
type WorkerStats struct {
	Worker      string
	Invocations int
	Failed      int
	Busy        time.Duration // working time (timeline, else started..finished)
	Booting     time.Duration
	Boots       int
	Utilisation float64 // Busy / run duration
}

// Split is the round-trip split of one invocation, in ms.
type Split struct{ Wait, Boot, Exec, Overhead float64 }

// SplitOf divides an invocation's latency: boot is the part of the
// worker's boot (power-on to connect) after the invocation was queued;
// wait is the rest of the time to its start; exec is the worker's own
// measure; overhead is what remains (dispatch, protocol, result transfer).
func SplitOf(r Row) Split {
	var s Split
	if !r.Started.IsZero() {
		toStart := ms(r.Started.Sub(r.Queued))
		if !r.PoweredOn.IsZero() && !r.Connected.IsZero() {
			from := r.PoweredOn
			if r.Queued.After(from) {
				from = r.Queued
			}
			if r.Connected.After(from) {
				s.Boot = ms(r.Connected.Sub(from))
			}
		}
		s.Boot = math.Min(s.Boot, math.Max(toStart, 0))
		s.Wait = math.Max(toStart-s.Boot, 0)
	}
	s.Exec = r.ExecMS
	s.Overhead = math.Max(r.LatencyMS-s.Wait-s.Boot-s.Exec, 0)
	return s
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Percentile is the nearest-rank percentile of sorted values.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Analyze computes the report's numbers for one run.
func Analyze(run *Run) *Analysis {
	a := &Analysis{Run: run}
	for _, r := range run.Rows {
		if !r.Queued.IsZero() && (a.Start.IsZero() || r.Queued.Before(a.Start)) {
			a.Start = r.Queued
		}
		if r.Finished.After(a.End) {
			a.End = r.Finished
		}
	}
	if run.HasSum {
		if !run.Summary.Started.IsZero() && (a.Start.IsZero() || run.Summary.Started.Before(a.Start)) {
			a.Start = run.Summary.Started
		}
		if run.Summary.Finished.After(a.End) {
			a.End = run.Summary.Finished
		}
	}
	dur := a.End.Sub(a.Start)
	by := map[string][]Row{}
	sources := map[string]bool{}
	for _, r := range run.Rows {
		by[r.Function] = append(by[r.Function], r)
		a.Total++
		if r.OK() {
			a.OK++
		} else {
			a.Failed++
		}
		if r.HasEnergy {
			a.EnergyRows = true
			if r.EnergySource != "" {
				sources[r.EnergySource] = true
			}
			if IsModel(r.EnergySource) {
				a.EnergyModel = true
			}
		}
	}
	a.EnergySource = strings.Join(sortedKeys(sources), ",")
	if dur > 0 {
		a.PerMinute = float64(a.OK) / dur.Minutes()
	}
	a.Throughput, a.BinSeconds = throughput(run.Rows, a.Start, a.End)
	a.All = stats("all", run.Rows)
	for _, name := range sortedKeys(by) {
		a.Functions = append(a.Functions, stats(name, by[name]))
	}
	a.Workers = workerStats(run, dur)
	msrc := map[string]bool{}
	for _, x := range run.Meter {
		msrc[x.Source] = true
		a.MeterModel = a.MeterModel || IsModel(x.Source)
	}
	a.MeterSource = strings.Join(sortedKeys(msrc), ",")
	if len(run.Meter) > 1 {
		var covered float64
		a.MeterJ, covered = Energy(run.Meter, a.Start, a.End)
		if covered > 0 {
			a.MeanWatts = a.MeterJ / covered
		}
		if a.OK > 0 {
			a.JPerInv = a.MeterJ / float64(a.OK)
		}
	}
	return a
}

// IsModel reports whether an energy_source is a model, not a measurement.
func IsModel(source string) bool { return strings.HasPrefix(source, "model:") }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func stats(name string, rows []Row) Stats {
	s := Stats{Function: name, Count: len(rows)}
	var energy float64
	var nEnergy int
	for _, r := range rows {
		if !r.OK() {
			s.Failed++
			continue
		}
		s.latencies = append(s.latencies, r.LatencyMS)
		sp := SplitOf(r)
		s.Wait += sp.Wait
		s.Boot += sp.Boot
		s.Exec += sp.Exec
		s.Overhead += sp.Overhead
		s.MeanLatency += r.LatencyMS
		if sp.Boot > 0 {
			s.Boots++
		}
		if r.HasEnergy {
			energy += r.EnergyJ
			nEnergy++
		}
	}
	n := float64(len(s.latencies))
	if n > 0 {
		s.Wait, s.Boot, s.Exec, s.Overhead, s.MeanLatency = s.Wait/n, s.Boot/n, s.Exec/n, s.Overhead/n, s.MeanLatency/n
	}
	if nEnergy > 0 {
		s.EnergyJ = energy / float64(nEnergy)
	}
	sort.Float64s(s.latencies)
	s.P50, s.P95, s.P99 = Percentile(s.latencies, 50), Percentile(s.latencies, 95), Percentile(s.latencies, 99)
	for i, l := range s.latencies {
		s.CDF = append(s.CDF, Point{l, float64(i+1) / n})
	}
	return s
}

// throughput counts successful invocations by finish time in bins of one
// minute, or shorter for short runs (at least 10 bins), scaled to per minute.
func throughput(rows []Row, start, end time.Time) ([]Point, float64) {
	dur := end.Sub(start).Seconds()
	if dur <= 0 {
		return nil, 0
	}
	bin := 60.0
	for bin > 1 && dur/bin < 10 {
		bin /= 2
	}
	n := int(math.Ceil(dur / bin))
	counts := make([]float64, n)
	for _, r := range rows {
		if !r.OK() {
			continue
		}
		i := int(r.Finished.Sub(start).Seconds() / bin)
		counts[max(0, min(i, n-1))]++
	}
	pts := make([]Point, n)
	for i, c := range counts {
		width := math.Min(bin, dur-float64(i)*bin) // the last bin may be partial
		pts[i] = Point{float64(i)*bin + width/2, c / width * 60}
	}
	return pts, bin
}

func workerStats(run *Run, dur time.Duration) []WorkerStats {
	by := map[string]*WorkerStats{}
	get := func(id string) *WorkerStats {
		if by[id] == nil {
			by[id] = &WorkerStats{Worker: id}
		}
		return by[id]
	}
	// Boots: the timeline's booting intervals, or, if more, the distinct
	// power-ons the rows name (a state sampled by polling can be missed).
	powerOns := map[string]map[time.Time]bool{}
	for _, r := range run.Rows {
		if r.Worker == "" {
			continue
		}
		w := get(r.Worker)
		w.Invocations++
		if !r.OK() {
			w.Failed++
		}
		if !r.PoweredOn.IsZero() {
			if powerOns[r.Worker] == nil {
				powerOns[r.Worker] = map[time.Time]bool{}
			}
			powerOns[r.Worker][r.PoweredOn] = true
		}
	}
	for _, iv := range run.Timeline {
		w := get(iv.Worker)
		switch iv.State {
		case state.Working:
			w.Busy += iv.End.Sub(iv.Start)
		case state.Booting:
			w.Booting += iv.End.Sub(iv.Start)
			w.Boots++
		}
	}
	for id, ons := range powerOns {
		by[id].Boots = max(by[id].Boots, len(ons))
	}
	var out []WorkerStats
	for _, id := range sortedKeys(by) {
		w := by[id]
		if dur > 0 {
			w.Utilisation = w.Busy.Seconds() / dur.Seconds()
		}
		out = append(out, *w)
	}
	return out
}

// Energy integrates power samples over [from, to]. As docs/energy.md and
// the energy package define them, a sample's watts are the mean power over
// the interval since the previous sample (the first only marks the start).
// It returns the joules and the seconds the samples cover.
func Energy(s []energy.Sample, from, to time.Time) (joules, covered float64) {
	for i := 1; i < len(s); i++ {
		a, b := s[i-1].At, s[i].At
		if a.Before(from) {
			a = from
		}
		if b.After(to) {
			b = to
		}
		if d := b.Sub(a).Seconds(); d > 0 {
			joules += d * s[i].Watts
			covered += d
		}
	}
	return joules, covered
}
