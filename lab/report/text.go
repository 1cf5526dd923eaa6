package report

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteText writes the plain-text summary: per run, the totals, a table
// per function and one per worker; for two or more runs, the comparison
// with ratios to the first.
func WriteText(w io.Writer, runs []*Analysis) error {
	ew := &errWriter{w: w}
	for i, a := range runs {
		if i > 0 {
			fmt.Fprintln(ew)
		}
		writeRunText(ew, a)
	}
	if len(runs) > 1 {
		fmt.Fprintf(ew, "\ncomparison (ratio = run / %s)\n", runs[0].Run.Name)
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "metric\t")
		for _, a := range runs {
			fmt.Fprintf(tw, "%s\t", a.Run.Name)
		}
		for _, a := range runs[1:] {
			fmt.Fprintf(tw, "%s ratio\t", a.Run.Name)
		}
		fmt.Fprintln(tw)
		for _, m := range Metrics {
			fmt.Fprintf(tw, "%s\t", m.Name)
			for _, a := range runs {
				v := fmtNum(m.Value(a))
				fmt.Fprintf(tw, "%s%s\t", v, m.modelNote(a))
			}
			for _, a := range runs[1:] {
				fmt.Fprintf(tw, "%s\t", fmtRatio(Ratio(m.Value(runs[0]), m.Value(a))))
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}
	return ew.err
}

func writeRunText(w io.Writer, a *Analysis) {
	r := a.Run
	fmt.Fprintf(w, "run %s (%s)\n", r.Name, r.Dir)
	if r.HasSum {
		s := r.Summary
		fmt.Fprintf(w, "  %d %s workers, %s, %s, meter %s\n", s.Workers, s.WorkerKind, s.Mode, arrivalText(s), s.Meter)
		if sim := s.Simulated; sim != nil {
			fmt.Fprintf(w, "  SIMULATED: profile %s (%s), policy %s, %d events; no worker ran\n", sim.Profile, sim.ProfileKind, sim.Policy, sim.Events)
		}
		if s.Interrupted {
			fmt.Fprintf(w, "  INTERRUPTED: %d of %d planned invocations finished\n", s.Done, s.Planned)
		}
	}
	fmt.Fprintf(w, "  %d invocations, %d failed, in %s: %.1f functions per minute; latency p50 %s ms, p99 %s ms\n",
		a.Total, a.Failed, durS(a.End.Sub(a.Start)), a.PerMinute, fmtNum(a.All.P50), fmtNum(a.All.P99))
	if a.MeterJ > 0 {
		fmt.Fprintf(w, "  %s: %.1f J, mean %.2f W, %.2f J per invocation\n", meterKind(a), a.MeterJ, a.MeanWatts, a.JPerInv)
	}
	if a.EnergyRows {
		kind := "measured"
		if a.EnergyModel {
			kind = "model"
		}
		fmt.Fprintf(w, "  energy per invocation: %s (%s)\n", kind, a.EnergySource)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "function\tcount\tfailed\tp50 ms\tp95 ms\tp99 ms\tboot ms\texec ms\twait ms\toverhead ms\tJ/inv\t")
	for _, s := range append(append([]Stats(nil), a.Functions...), a.All) {
		j := s.joules(a)
		if j == "" {
			j = "-"
		}
		c := s.cells()
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s.Function, s.Count, s.Failed,
			c[0], c[1], c[2], c[3], c[4], c[5], c[6], j)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "worker\tinvocations\tfailed\tboots\tworking s\tbooting s\tutilisation\t")
	for _, ws := range a.Workers {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.1f\t%.1f\t%.0f%%\t\n", ws.Worker, ws.Invocations, ws.Failed, ws.Boots,
			ws.Busy.Seconds(), ws.Booting.Seconds(), ws.Utilisation*100)
	}
	tw.Flush()
}

// meterKind names the meter's data: "meter (measured:wattsup)" or
// "MODEL meter (model:cpu-time)".
func meterKind(a *Analysis) string {
	if a.MeterModel {
		return "meter, model (" + a.MeterSource + ")"
	}
	return "meter (" + a.MeterSource + ")"
}
