package report

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/state"
)

const (
	wideChart  = 860
	smallChart = 280
)

// splitSeries are the parts of a round trip, in stacking order.
var splitSeries = []string{"boot", "exec", "wait for a worker", "overhead"}
var splitColors = []string{StateColors[state.Booting], StateColors[state.Working], "#bab0ac", "#e15759"}

// WriteHTML writes a self-contained page (inline SVG and CSS, no script,
// nothing fetched) for one or more analysed runs; the first is the
// baseline of comparisons.
func WriteHTML(w io.Writer, runs []*Analysis, generated time.Time) error {
	return WriteHTMLWith(w, runs, generated, "")
}

// WriteHTMLWith is WriteHTML with a section of the caller's (HTML, such
// as the cost comparison of lab/tco) placed before the runs.
func WriteHTMLWith(w io.Writer, runs []*Analysis, generated time.Time, section string) error {
	ew := &errWriter{w: w}
	var names []string
	for _, a := range runs {
		names = append(names, a.Run.Name)
	}
	if len(names) == 0 {
		names = []string{"none (the cost comparison only)"}
	}
	fmt.Fprintf(ew, `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>MicroFaaS report: %s</title>
<style>
body{font-family:sans-serif;margin:24px;color:#222;max-width:1800px}
h1{font-size:22px}h2{font-size:18px;margin-top:36px;border-bottom:1px solid #ccc}h3{font-size:15px;margin-top:24px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}.facts td{text-align:left}
figure{margin:12px 0}figcaption{font-size:13px;color:#444;max-width:860px}
.grid{display:flex;flex-wrap:wrap;gap:8px}.note{color:#8a4b00}
.model{background:#fff3cd;padding:0 4px;border-radius:3px}
</style></head><body>
<h1>MicroFaaS experiment report</h1>
<p>Runs: %s. Generated %s by <code>mforch report</code>; docs/experiments.md explains every figure.</p>
`, esc(strings.Join(names, ", ")), esc(strings.Join(names, ", ")), generated.UTC().Format(time.RFC3339))
	io.WriteString(ew, section)
	if len(runs) > 1 {
		writeComparison(ew, runs)
	}
	for i, a := range runs {
		writeRun(ew, a, i)
	}
	fmt.Fprintln(ew, "</body></html>")
	return ew.err
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func runColor(i int) string { return Palette[i%len(Palette)] }

func durS(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func energyLabel(a *Analysis) string {
	if a.EnergyModel {
		return `<span class="model">model</span> (` + esc(a.EnergySource) + `)`
	}
	if a.EnergySource != "" {
		return "measured (" + esc(a.EnergySource) + ")"
	}
	return ""
}

func writeRun(w io.Writer, a *Analysis, idx int) {
	r := a.Run
	fmt.Fprintf(w, "<h2 id=\"run-%d\">Run %s</h2>\n", idx, esc(r.Name))
	if r.HasSum && r.Summary.Interrupted {
		fmt.Fprintf(w, "<p class=\"note\">This run was interrupted: %d of %d planned invocations finished.</p>\n", r.Summary.Done, r.Summary.Planned)
	}
	if sim := r.Summary.Simulated; r.HasSum && sim != nil {
		fmt.Fprintf(w, "<p class=\"note\">SIMULATED (mforch simulate): no worker ran. Profile %s (%s): %s. Policy %s; %d events.</p>\n",
			esc(sim.Profile), esc(sim.ProfileKind), esc(sim.ProfileSource), esc(sim.Policy), sim.Events)
	}
	fmt.Fprintln(w, "<table class=\"facts\">")
	row := func(k, v string) { fmt.Fprintf(w, "<tr><th>%s</th><td>%s</td></tr>\n", esc(k), v) }
	row("folder", esc(r.Dir))
	if r.HasSum {
		s := r.Summary
		row("workers", esc(fmt.Sprintf("%d (%s)", s.Workers, s.WorkerKind)))
		mode := s.Mode
		if s.Idle != "" {
			mode += ", idle " + s.Idle
		}
		row("worker mode", esc(mode))
		row("arrivals", esc(arrivalText(s)))
		if s.Simulated == nil {
			row("host", esc(fmt.Sprintf("%s, %d cores, kernel %s", s.Host.CPU, s.Host.Cores, s.Host.Kernel)))
		}
		if s.Host.QEMU != "" {
			row("QEMU", esc(fmt.Sprintf("%s, accel %s", s.Host.QEMU, s.Host.Accel)))
		}
		row("meter", esc(s.Meter))
	}
	row("invocations", fmt.Sprintf("%d (%d failed)", a.Total, a.Failed))
	row("duration", durS(a.End.Sub(a.Start)))
	row("throughput", fmt.Sprintf("%.1f functions per minute", a.PerMinute))
	row("latency p50 / p95 / p99", fmt.Sprintf("%s / %s / %s ms", fmtNum(a.All.P50), fmtNum(a.All.P95), fmtNum(a.All.P99)))
	if a.MeterJ > 0 {
		row("energy ("+meterKind(a)+")", fmt.Sprintf("%.1f J, mean %.2f W, %.2f J per invocation", a.MeterJ, a.MeanWatts, a.JPerInv))
	}
	if a.EnergyRows {
		row("energy per invocation", energyLabel(a))
	}
	fmt.Fprintln(w, "</table>")
	writeFunctionTable(w, a)

	fmt.Fprintln(w, "<h3>Functions per minute over time</h3><figure>")
	LineChart{Title: "Throughput: " + r.Name, XLabel: "time since start (s)", YLabel: "functions per minute",
		Width: wideChart, Height: 300, Series: []Series{{Name: r.Name, Color: runColor(idx), Points: a.Throughput}}}.Render(w)
	fmt.Fprintf(w, "<figcaption>Successful invocations by finish time, counted in bins of %s s and scaled to per minute (the original's csv_data.py counted per minute). Over the whole run: %.1f per minute.</figcaption></figure>\n",
		fmtNum(a.BinSeconds), a.PerMinute)

	fmt.Fprintln(w, "<h3>Latency CDF per function</h3><figure><div class=\"grid\">")
	for _, s := range a.Functions {
		title := s.Function
		if len(s.CDF) == 0 {
			title += " (none succeeded)"
		}
		cdfChart(title, []Series{{Name: "", Color: runColor(idx), Points: s.CDF, Step: true}}).Render(w)
	}
	fmt.Fprintln(w, "</div><figcaption>Fraction of a function's successful invocations whose round trip (queued to result) took at most x ms. Each panel has its own x scale; a log scale when latencies span more than a factor of 30.</figcaption></figure>")

	fmt.Fprintln(w, "<h3>Round trip vs execution time</h3><figure>")
	splitChart(a, "Mean round trip split: "+r.Name, wideChart).Render(w)
	fmt.Fprintln(w, "<figcaption>Mean per successful invocation: <b>boot</b> is the part of the worker's boot (power-on to connect) the invocation waited for; <b>exec</b> is the execution time the worker measured; <b>wait for a worker</b> is the rest of the time from queued to started; <b>overhead</b> is what remains of the round trip (dispatch, protocol, result). The label is the mean round trip.</figcaption></figure>")

	fmt.Fprintln(w, "<h3>Invocations and busy time per worker</h3><figure><div class=\"grid\">")
	var ids []string
	var counts, busy [][]float64
	for _, ws := range a.Workers {
		ids = append(ids, ws.Worker)
		counts = append(counts, []float64{float64(ws.Invocations)})
		busy = append(busy, []float64{ws.Busy.Seconds(), ws.Booting.Seconds()})
	}
	BarChart{Title: "Invocations per worker", XLabel: "invocations", Width: 420, Rows: ids, Series: []string{"invocations"},
		Colors: []string{runColor(idx)}, Values: counts, Annotate: true}.Render(w)
	BarChart{Title: "Time per worker", XLabel: "seconds", Width: 420, Rows: ids, Series: []string{"working", "booting"},
		Colors: []string{StateColors[state.Working], StateColors[state.Booting]}, Values: busy}.Render(w)
	src := "the worker state timeline"
	if r.TimelineDerived {
		src = "the invocations' timestamps (this run folder has no timeline.csv)"
	}
	fmt.Fprintf(w, "</div><figcaption>Invocations each worker ran (the original's log_data.py), and its time working and booting, from %s.</figcaption></figure>\n", src)
	writeWorkerTable(w, a)

	fmt.Fprintln(w, "<h3>Power and worker states over time</h3><figure>")
	xmax := a.End.Sub(a.Start).Seconds()
	left := 80.0
	if len(r.Meter) > 0 {
		var pts []Point
		for _, s := range r.Meter {
			pts = append(pts, Point{s.At.Sub(a.Start).Seconds(), s.Watts})
		}
		title := "Power: " + r.Name
		if a.MeterModel {
			title += " (model)"
		}
		LineChart{Title: title, XLabel: "time since start (s)", YLabel: "power (W)", Width: wideChart, Height: 260,
			XMax: xmax, LeftPad: left, Series: []Series{{Name: "meter (" + meterSource(r.Meter) + ")", Color: "#e15759", Points: pts, Back: true}}}.Render(w)
	} else {
		fmt.Fprintln(w, "<p class=\"note\">No meter samples in this run (meter: none), so no power trace.</p>")
	}
	lanes(a, left).Render(w)
	fmt.Fprintln(w, "<figcaption>The meter's power samples (meter.csv; each is the mean power since the previous one) above the worker states (timeline.csv), on the same time axis.</figcaption></figure>")

	fmt.Fprintln(w, "<h3>Energy per invocation</h3>")
	switch {
	case a.EnergyRows:
		var vals [][]float64
		var rows []string
		for _, s := range a.Functions {
			if len(s.latencies) == 0 {
				continue // none succeeded: no energy per invocation
			}
			rows = append(rows, s.Function)
			vals = append(vals, []float64{s.EnergyJ})
		}
		title := "Joules per invocation: " + r.Name
		if a.EnergyModel {
			title += " (model)"
		}
		fmt.Fprintln(w, "<figure>")
		BarChart{Title: title, XLabel: "joules per invocation (J)", Width: wideChart, Rows: rows, Series: []string{"J"},
			Colors: []string{runColor(idx)}, Values: vals, Annotate: true}.Render(w)
		fmt.Fprintf(w, "<figcaption>Mean energy_j of the function's successful invocations: the energy attributed to the invocation's boot, execution and shutdown, and its share of idle time. Source: %s.</figcaption></figure>\n", energyLabel(a))
	case a.MeterJ > 0:
		fmt.Fprintf(w, "<p>The results have no per-invocation energy columns; the meter measured %.1f J over the run, %.2f J per successful invocation (idle power included).</p>\n", a.MeterJ, a.JPerInv)
	default:
		fmt.Fprintln(w, "<p class=\"note\">No energy data in this run (no meter samples, no energy columns).</p>")
	}
}

func arrivalText(s Summary) string {
	if s.Arrival == "closed-loop" {
		return fmt.Sprintf("closed loop, %d callers, seed %d", s.Concurrency, s.Seed)
	}
	if s.Simulated != nil && s.Simulated.Trace != "" {
		return fmt.Sprintf("trace %s (%d calls), seed %d", s.Simulated.Trace, s.Planned, s.Seed)
	}
	return fmt.Sprintf("%s at %g/s, seed %d", s.Arrival, s.Rate, s.Seed)
}

func meterSource(s []energy.Sample) string {
	seen := map[string]bool{}
	for _, x := range s {
		seen[x.Source] = true
	}
	src := strings.Join(sortedKeys(seen), ",")
	if IsModel(src) {
		return "model: " + strings.TrimPrefix(src, "model:")
	}
	return src
}

func cdfChart(title string, series []Series) LineChart {
	return LineChart{Title: title, XLabel: "latency (ms)", YLabel: "fraction", Width: smallChart, Height: 200, YMax: 1, Series: series, LogX: true}
}

func splitChart(a *Analysis, title string, width int) BarChart {
	var rows []string
	var vals [][]float64
	for _, s := range append(append([]Stats(nil), a.Functions...), a.All) {
		rows = append(rows, s.Function)
		vals = append(vals, []float64{s.Boot, s.Exec, s.Wait, s.Overhead})
	}
	return BarChart{Title: title, XLabel: "mean time per invocation (ms)", Width: width, Rows: rows, Series: splitSeries,
		Colors: splitColors, Values: vals, Stacked: true, Annotate: true}
}

func lanes(a *Analysis, left float64) Lanes {
	l := Lanes{Title: "Worker states: " + a.Run.Name, Width: wideChart, LeftPad: left, XMax: a.End.Sub(a.Start).Seconds()}
	seen := map[string]bool{}
	for _, ws := range a.Workers {
		seen[ws.Worker] = true
	}
	for _, iv := range a.Run.Timeline {
		seen[iv.Worker] = true
		l.Intervals = append(l.Intervals, LaneInterval{Worker: iv.Worker, State: iv.State,
			From: iv.Start.Sub(a.Start).Seconds(), To: iv.End.Sub(a.Start).Seconds()})
	}
	l.Workers = sortedKeys(seen)
	return l
}

func writeFunctionTable(w io.Writer, a *Analysis) {
	fmt.Fprintln(w, "<table><tr><th>function</th><th>count</th><th>failed</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>boot ms</th><th>exec ms</th><th>wait ms</th><th>overhead ms</th><th>J/inv</th></tr>")
	for _, s := range append(append([]Stats(nil), a.Functions...), a.All) {
		j := s.joules(a)
		c := s.cells()
		fmt.Fprintf(w, "<tr><td>%s</td><td>%d</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>\n",
			esc(s.Function), s.Count, s.Failed, c[0], c[1], c[2], c[3], c[4], c[5], c[6], j)
	}
	fmt.Fprintln(w, "</table>")
}

// joules is a function's J/inv cell for tables: "" without energy rows or
// without a successful invocation, marked "(model)" when it is one.
func (s Stats) joules(a *Analysis) string {
	if !a.EnergyRows || len(s.latencies) == 0 {
		return ""
	}
	if a.EnergyModel {
		return fmt.Sprintf("%.3f (model)", s.EnergyJ)
	}
	return fmt.Sprintf("%.3f", s.EnergyJ)
}

// cells are a function's p50, p95, p99, boot, exec, wait and overhead for
// tables: "–" when none of its invocations succeeded.
func (s Stats) cells() []string {
	if len(s.latencies) == 0 {
		return []string{"–", "–", "–", "–", "–", "–", "–"}
	}
	one := func(v float64) string { return fmt.Sprintf("%.1f", v) }
	return []string{fmtNum(s.P50), fmtNum(s.P95), fmtNum(s.P99), one(s.Boot), one(s.Exec), one(s.Wait), one(s.Overhead)}
}

func writeWorkerTable(w io.Writer, a *Analysis) {
	fmt.Fprintln(w, "<table><tr><th>worker</th><th>invocations</th><th>failed</th><th>boots</th><th>working s</th><th>booting s</th><th>utilisation</th></tr>")
	for _, ws := range a.Workers {
		fmt.Fprintf(w, "<tr><td>%s</td><td>%d</td><td>%d</td><td>%d</td><td>%.1f</td><td>%.1f</td><td>%.0f%%</td></tr>\n",
			esc(ws.Worker), ws.Invocations, ws.Failed, ws.Boots, ws.Busy.Seconds(), ws.Booting.Seconds(), ws.Utilisation*100)
	}
	fmt.Fprintln(w, "</table>")
}

// Metric is one compared number of a run.
type Metric struct {
	Name  string
	Value func(a *Analysis) float64
	// Lower is set when smaller values are better (for reading ratios).
	Lower bool
	// Model says whether a run's value comes from a model, not a meter.
	Model func(a *Analysis) bool
}

func (m Metric) modelNote(a *Analysis) string {
	if m.Model != nil && m.Model(a) && !math.IsNaN(m.Value(a)) {
		return " (model)"
	}
	return ""
}

func meterIsModel(a *Analysis) bool  { return a.MeterModel }
func energyIsModel(a *Analysis) bool { return a.EnergyModel }

// Metrics are the numbers compared across runs.
var Metrics = []Metric{
	{"invocations ok", func(a *Analysis) float64 { return float64(a.OK) }, false, nil},
	{"failed", func(a *Analysis) float64 { return float64(a.Failed) }, true, nil},
	{"functions per minute", func(a *Analysis) float64 { return a.PerMinute }, false, nil},
	{"latency p50 (ms)", func(a *Analysis) float64 { return a.All.P50 }, true, nil},
	{"latency p99 (ms)", func(a *Analysis) float64 { return a.All.P99 }, true, nil},
	{"mean boot (ms)", func(a *Analysis) float64 { return a.All.Boot }, true, nil},
	{"mean exec (ms)", func(a *Analysis) float64 { return a.All.Exec }, true, nil},
	{"mean wait (ms)", func(a *Analysis) float64 { return a.All.Wait }, true, nil},
	{"mean overhead (ms)", func(a *Analysis) float64 { return a.All.Overhead }, true, nil},
	{"mean power (W)", func(a *Analysis) float64 { return orNaN(a.MeterJ > 0, a.MeanWatts) }, true, meterIsModel},
	{"meter J per invocation", func(a *Analysis) float64 { return orNaN(a.MeterJ > 0, a.JPerInv) }, true, meterIsModel},
	{"attributed J per invocation", func(a *Analysis) float64 { return orNaN(a.EnergyRows, a.All.EnergyJ) }, true, energyIsModel},
}

// orNaN is v when the run has the data, else NaN (shown as "–").
func orNaN(ok bool, v float64) float64 {
	if !ok {
		return math.NaN()
	}
	return v
}

// Ratio is b/a, or NaN when a is 0 or either is NaN.
func Ratio(a, b float64) float64 {
	if a == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return b / a
}

func fmtRatio(r float64) string {
	if math.IsNaN(r) {
		return "–"
	}
	if r != 0 && math.Abs(r) < 0.01 {
		return fmt.Sprintf("%.2g×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

func writeComparison(w io.Writer, runs []*Analysis) {
	base := runs[0]
	fmt.Fprintln(w, "<h2 id=\"comparison\">Comparison</h2>")
	fmt.Fprintf(w, "<p>Ratios are each run's value divided by the first run's (%s).</p>\n<table><tr><th>metric</th>", esc(base.Run.Name))
	for _, a := range runs {
		fmt.Fprintf(w, "<th>%s</th>", esc(a.Run.Name))
	}
	for _, a := range runs[1:] {
		fmt.Fprintf(w, "<th>%s / %s</th>", esc(a.Run.Name), esc(base.Run.Name))
	}
	fmt.Fprintln(w, "</tr>")
	for _, m := range Metrics {
		fmt.Fprintf(w, "<tr><td>%s</td>", esc(m.Name))
		for _, a := range runs {
			fmt.Fprintf(w, "<td>%s%s</td>", fmtNum(m.Value(a)), m.modelNote(a))
		}
		for _, a := range runs[1:] {
			fmt.Fprintf(w, "<td>%s</td>", fmtRatio(Ratio(m.Value(base), m.Value(a))))
		}
		fmt.Fprintln(w, "</tr>")
	}
	fmt.Fprintln(w, "</table>")

	var tp []Series
	for i, a := range runs {
		tp = append(tp, Series{Name: a.Run.Name, Color: runColor(i), Points: a.Throughput})
	}
	fmt.Fprintln(w, "<h3>Functions per minute over time</h3><figure>")
	LineChart{Title: "Throughput", XLabel: "time since start (s)", YLabel: "functions per minute", Width: wideChart, Height: 300, Series: tp}.Render(w)
	fmt.Fprintln(w, "</figure>")

	fmt.Fprintln(w, "<h3>Latency CDF per function</h3><figure><div class=\"grid\">")
	for _, fn := range unionFunctions(runs) {
		var ss []Series
		for i, a := range runs {
			if s, ok := statsOf(a, fn); ok {
				ss = append(ss, Series{Name: a.Run.Name, Color: runColor(i), Points: s.CDF, Step: true})
			}
		}
		cdfChart(fn, ss).Render(w)
	}
	fmt.Fprintln(w, "</div></figure>")

	fmt.Fprintln(w, "<h3>Median latency per function</h3><figure>")
	groupedChart(runs, "Latency p50 per function", "latency p50 (ms)", func(s Stats) float64 { return s.P50 }).Render(w)
	fmt.Fprintln(w, "</figure><h3>Round trip vs execution time</h3><figure><div class=\"grid\">")
	for _, a := range runs {
		splitChart(a, a.Run.Name, 560).Render(w)
	}
	fmt.Fprintln(w, "</div></figure>")
	anyEnergy := false
	for _, a := range runs {
		anyEnergy = anyEnergy || a.EnergyRows
	}
	if anyEnergy {
		title := "Joules per invocation"
		for _, a := range runs {
			if a.EnergyModel {
				title += " (model: see each run)"
				break
			}
		}
		fmt.Fprintln(w, "<h3>Energy per invocation</h3><figure>")
		groupedChart(runs, title, "joules per invocation (J)", func(s Stats) float64 { return s.EnergyJ }).Render(w)
		fmt.Fprintln(w, "</figure>")
	}
}

func unionFunctions(runs []*Analysis) []string {
	seen := map[string]bool{}
	for _, a := range runs {
		for _, s := range a.Functions {
			seen[s.Function] = true
		}
	}
	out := sortedKeys(seen)
	sort.Strings(out)
	return out
}

func statsOf(a *Analysis, fn string) (Stats, bool) {
	if fn == "all" {
		return a.All, true
	}
	for _, s := range a.Functions {
		if s.Function == fn {
			return s, true
		}
	}
	return Stats{}, false
}

func groupedChart(runs []*Analysis, title, xlabel string, v func(Stats) float64) BarChart {
	c := BarChart{Title: title, XLabel: xlabel, Width: wideChart}
	for i, a := range runs {
		c.Series = append(c.Series, a.Run.Name)
		c.Colors = append(c.Colors, runColor(i))
	}
	for _, fn := range append(unionFunctions(runs), "all") {
		c.Rows = append(c.Rows, fn)
		var vals []float64
		for _, a := range runs {
			s, _ := statsOf(a, fn)
			vals = append(vals, v(s))
		}
		c.Values = append(c.Values, vals)
	}
	return c
}
