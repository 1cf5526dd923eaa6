package tco

import (
	"fmt"
	"html"
	"io"
	"strings"
)

// Method is the report's statement of how the figures are computed.
const Method = `Energy efficiency is invocations per joule at the plug: a run's successful invocations over its meter's energy (plus the switches' power over the run's duration); for a model, the load's mean rate over the units' mean power, idle power plus (busy − idle) × utilisation, utilisation being the mean rate over the units' capacity. ` +
	`The load is the first run folder's (its successful invocations over its duration; its peak, the busiest bin of its throughput figure, one minute for runs of ten minutes or more), else the file's workload. ` +
	`Units: a run's worker count (divided by workers per unit); a simulated platform's is the fewest workers of its profile that keep its p99 target with none failed, found by bisection over simulations of the same calls; a model is throughput-matched: enough units to serve the load's peak rate at the stated throughput per unit (which holds the latency target). ` +
	`TCO = capex + opex: capex = units × unit price + ⌈units ÷ switch ports⌉ × switch price; opex = mean power × 8766 h a year × lifetime × electricity price × PUE, the run's load taken as lasting the whole lifetime. ` +
	`The ratios compare the first platform with the second: efficiency ratio = first's invocations per joule ÷ second's; TCO change = (first's TCO − second's) ÷ second's.`

// NotReproduced says plainly what this comparison is not.
const NotReproduced = `The DATE'22 MicroFaaS paper's own inputs (its prices, power figures, lifetime and load) are not available to this project and are not reproduced here: every number below is this cost file's, with its source, and numbers marked assumption are the file author's own. ` +
	`The paper's published results, for comparison only: 5.6× energy efficiency and −34.2% TCO for the board cluster against a throughput-matched x86 VM cluster.`

// Input is one row of the inputs table.
type Input struct {
	Name, Unit string
	N          Number
}

// Inputs lists every number of the file that the result used, in order.
func (f *File) Inputs() []Input {
	var in []Input
	add := func(name, unit string, n *Number) {
		if n != nil {
			in = append(in, Input{name, unit, *n})
		}
	}
	cur := f.Currency
	add("electricity price", cur+" per kWh", f.ElectricityPrice)
	add("PUE", "", f.PUE)
	if w := f.Workload; w != nil {
		add("workload: mean rate", "invocations/s", w.MeanRate)
		add("workload: peak rate", "invocations/s", w.PeakRate)
	}
	for _, p := range f.Platforms {
		add(p.Name+": unit price", cur, p.UnitPrice)
		add(p.Name+": lifetime", "years", p.LifetimeYears)
		if sm := p.Simulate; sm != nil {
			add(p.Name+": p99 target", "ms", sm.P99TargetMS)
		}
		if m := p.Model; m != nil {
			add(p.Name+": throughput per unit", "invocations/s", m.ThroughputPerUnit)
			add(p.Name+": idle power per unit", "W", m.IdleWatts)
			add(p.Name+": busy power per unit", "W", m.BusyWatts)
		}
		if s := p.Switch; s != nil {
			add(p.Name+": switch price", cur, s.Price)
			add(p.Name+": switch ports", "units", s.Ports)
			add(p.Name+": switch power", "W", s.Watts)
		}
	}
	return in
}

func esc(s string) string { return html.EscapeString(s) }

func sourceHTML(n Number) string {
	if n.IsAssumption() {
		return `<span class="model">assumption</span>` + esc(strings.TrimSpace(n.Source)[len(Assumption):])
	}
	return esc(n.Source)
}

func money(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.4f", v)
}

// WriteHTML writes the comparison as a section of the report page.
func (r *Result) WriteHTML(w io.Writer) error {
	var b strings.Builder
	f := r.File
	title := "Energy efficiency and cost of ownership"
	if f.Name != "" {
		title += ": " + f.Name
	}
	fmt.Fprintf(&b, "<h2 id=\"tco\">%s</h2>\n", esc(title))
	fmt.Fprintf(&b, "<p class=\"note\">%s</p>\n", esc(NotReproduced))
	fmt.Fprintf(&b, "<p>%s</p>\n", esc(Method))
	fmt.Fprintf(&b, "<p>Load: %.4g invocations/s on average, peak %.4g/s (from %s).</p>\n", r.Load.Mean, r.Load.Peak, esc(r.Load.From))
	b.WriteString("<h3>Inputs</h3>\n<table class=\"facts\"><tr><th>input</th><th>value</th><th>unit</th><th>source</th></tr>\n")
	for _, in := range f.Inputs() {
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%v</td><td>%s</td><td>%s</td></tr>\n", esc(in.Name), in.N.Value, esc(in.Unit), sourceHTML(in.N))
	}
	for _, p := range r.Platforms {
		if run := p.Run; run != nil {
			kind := "measured"
			if run.Simulated {
				kind = "SIMULATED"
			}
			meter := esc(run.MeterSource)
			if run.MeterModel {
				meter = `<span class="model">model</span> ` + meter
			}
			fmt.Fprintf(&b, "<tr><td>%s: run</td><td>%s</td><td></td><td>%s run (%s): %d invocations in %.0f s, %d workers, %.4g J (meter: %s), p50 %.0f ms, p99 %.0f ms</td></tr>\n",
				esc(p.Platform.Name), esc(run.Name), kind, esc(run.Dir), run.Invocations, run.Seconds, run.Workers, run.EnergyJ, meter, run.P50, run.P99)
		}
	}
	b.WriteString("</table>\n<h3>Results</h3>\n<table><tr><th></th>")
	for _, p := range r.Platforms {
		fmt.Fprintf(&b, "<th>%s</th>", esc(p.Platform.Name))
	}
	b.WriteString("</tr>\n")
	row := func(name string, v func(PlatformResult) string) {
		fmt.Fprintf(&b, "<tr><td>%s</td>", esc(name))
		for _, p := range r.Platforms {
			fmt.Fprintf(&b, "<td>%s</td>", esc(v(p)))
		}
		b.WriteString("</tr>\n")
	}
	cur := f.Currency
	row("units", func(p PlatformResult) string { return fmt.Sprintf("%d (%s)", p.Units, p.UnitsHow) })
	row("switches", func(p PlatformResult) string { return fmt.Sprint(p.Switches) })
	row("utilisation (model)", func(p PlatformResult) string {
		if p.Run != nil {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", p.Utilisation*100)
	})
	row("mean power (W)", func(p PlatformResult) string { return fmt.Sprintf("%.4g", p.Watts) })
	row("invocations per joule", func(p PlatformResult) string { return fmt.Sprintf("%.4g", p.InvPerJ) })
	row("energy per year (kWh)", func(p PlatformResult) string { return fmt.Sprintf("%.4g", p.KWhPerYear) })
	row("capex: units ("+cur+")", func(p PlatformResult) string { return money(p.CapexUnits) })
	row("capex: switches ("+cur+")", func(p PlatformResult) string { return money(p.CapexSwitch) })
	row("opex: energy over the lifetime ("+cur+")", func(p PlatformResult) string { return money(p.Opex) })
	row("TCO ("+cur+")", func(p PlatformResult) string { return money(p.TCO) })
	row("TCO per million invocations ("+cur+")", func(p PlatformResult) string { return money(p.PerMillion) })
	b.WriteString("</table>\n")
	a, c := r.Platforms[0].Platform.Name, r.Platforms[1].Platform.Name
	fmt.Fprintf(&b, "<table><tr><th>%s vs %s</th><th>these inputs</th><th>the paper's claim (its inputs not reproduced)</th></tr>\n", esc(a), esc(c))
	fmt.Fprintf(&b, "<tr><td>energy efficiency ratio</td><td>%.3g×</td><td>%.1f×</td></tr>\n", r.EfficiencyRatio, PaperEfficiencyRatio)
	fmt.Fprintf(&b, "<tr><td>TCO change</td><td>%+.1f%%</td><td>%+.1f%%</td></tr>\n</table>\n", r.TCOChange*100, PaperTCOChange*100)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "<p class=\"note\">%s</p>\n", esc(n))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteText writes the comparison for a terminal.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	f := r.File
	fmt.Fprintf(&b, "\nEnergy efficiency and cost of ownership (%s); the DATE'22 paper's inputs are not reproduced: these are the cost file's\n", f.Name)
	fmt.Fprintf(&b, "load: %.4g invocations/s mean, %.4g/s peak (from %s)\n", r.Load.Mean, r.Load.Peak, r.Load.From)
	for _, in := range f.Inputs() {
		fmt.Fprintf(&b, "  %-40s %12v %-18s %s\n", in.Name, in.N.Value, in.Unit, in.N.Source)
	}
	fmt.Fprintf(&b, "%-34s %8s %8s %12s %12s %12s %12s %10s\n", "platform", "units", "W", "inv/J", "capex", "opex", "TCO", "per 1M inv")
	for _, p := range r.Platforms {
		fmt.Fprintf(&b, "%-34s %8d %8.4g %12.4g %12s %12s %12s %10s\n", p.Platform.Name, p.Units, p.Watts, p.InvPerJ, money(p.Capex), money(p.Opex), money(p.TCO), money(p.PerMillion))
	}
	fmt.Fprintf(&b, "energy efficiency ratio %.3g× (paper: %.1f×), TCO change %+.1f%% (paper: %+.1f%%)\n", r.EfficiencyRatio, PaperEfficiencyRatio, r.TCOChange*100, PaperTCOChange*100)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
