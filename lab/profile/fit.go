package profile

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/lab/report"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// ErrFit says a run folder does not hold what a profile needs.
var ErrFit = errors.New("cannot fit a profile")

// maxSamples bounds an empirical distribution's samples (evenly thinned).
const maxSamples = 2000

// Fit makes a profile from a recorded run folder: empirical distributions
// of what timeline.csv and results.csv show, and the per-state power fitted
// to meter.csv (energy.Attribute's least squares) when the run has one.
//
//   - boot: a booting interval followed at once by idle or working (the
//     hello), unless it follows a working interval directly (a reboot);
//   - reboot: booting right after working, up to the hello;
//   - shutdown: stopping intervals (told to power off, to off; on boards
//     that cannot report exits this is the power-off holdoff);
//   - exec: each function's exec_ms, and all of them pooled as default;
//   - overhead: started..finished minus exec_ms.
//
// kind is the workers' kind; "" takes it from summary.json (qemu runs
// are vm).
func Fit(run *report.Run, kind string) (*Profile, error) {
	if kind == "" {
		if run.HasSum && run.Summary.WorkerKind == "qemu" {
			kind = cluster.KindVM
		} else {
			return nil, fmt.Errorf("%w: %s: the run does not say its workers' kind (it ran on a cluster file): give it (--kind bbb or vm)", ErrFit, run.Dir)
		}
	}
	p := &Profile{Name: run.Name, Kind: kind, Source: "fitted from run folder " + run.Name, Exec: map[string]Dist{}}
	if run.HasSum {
		h := run.Summary.Host
		p.Source += fmt.Sprintf(" (%d %s workers, %s, %s arrivals; host %s, %d cores, accel %s; %s)",
			run.Summary.Workers, run.Summary.WorkerKind, run.Summary.Mode, run.Summary.Arrival, h.CPU, h.Cores, orNone(h.Accel), run.Summary.Started.UTC().Format(time.RFC3339))
	}
	if run.TimelineDerived || len(run.Timeline) == 0 {
		return nil, fmt.Errorf("%w: %s has no timeline.csv: the boot and shutdown times come from it (record the run with mforch experiment)", ErrFit, run.Dir)
	}
	var boot, reboot, shutdown []float64
	for _, ivs := range byWorker(run.Timeline) {
		for i, iv := range ivs {
			d := iv.End.Sub(iv.Start).Seconds()
			switch iv.State {
			case state.Stopping:
				shutdown = append(shutdown, d)
			case state.Booting:
				if i+1 >= len(ivs) || !near(ivs[i+1].Start, iv.End) || (ivs[i+1].State != state.Idle && ivs[i+1].State != state.Working) {
					continue // a boot that failed or was cut off
				}
				if i > 0 && near(ivs[i-1].End, iv.Start) && ivs[i-1].State == state.Working {
					reboot = append(reboot, d)
				} else {
					boot = append(boot, d)
				}
			}
		}
	}
	if len(boot) == 0 {
		return nil, fmt.Errorf("%w: %s: no complete boot (booting then idle or working) in timeline.csv", ErrFit, run.Dir)
	}
	p.Boot = empirical(boot)
	if len(reboot) > 0 {
		p.Reboot = empirical(reboot)
	} else {
		p.Reboot = p.Boot
		p.Notes = append(p.Notes, "reboot: the run has no reboot (policy off); taken as the boot's distribution")
	}
	if len(shutdown) == 0 {
		return nil, fmt.Errorf("%w: %s: no stopping interval in timeline.csv (the run ended before a worker powered off)", ErrFit, run.Dir)
	}
	p.Shutdown = empirical(shutdown)
	if kind == cluster.KindBBB {
		p.Notes = append(p.Notes, "shutdown: a board cannot report its exit, so its stopping intervals are the power-off holdoff, not its shutdown")
	}
	exec := map[string][]float64{}
	var all, overhead []float64
	for _, r := range run.Rows {
		if !r.OK() || r.Started.IsZero() || r.Finished.IsZero() {
			continue
		}
		e := r.ExecMS / 1000
		exec[r.Function] = append(exec[r.Function], e)
		all = append(all, e)
		overhead = append(overhead, math.Max(r.Finished.Sub(r.Started).Seconds()-e, 0))
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("%w: %s: no successful invocation in results.csv", ErrFit, run.Dir)
	}
	for f, v := range exec {
		p.Exec[f] = empirical(v)
	}
	p.Exec["default"] = empirical(all)
	p.Overhead = empirical(overhead)
	if len(run.Meter) >= 2 {
		res, err := energy.Attribute(energy.Input{Samples: run.Meter, Intervals: run.Timeline})
		if err != nil {
			return nil, fmt.Errorf("%w: %s: power from meter.csv: %w", ErrFit, run.Dir, err)
		}
		if res.Fit == nil {
			return nil, fmt.Errorf("%w: %s: meter.csv has per-board series only; no per-state fit", ErrFit, run.Dir)
		}
		f := res.Fit
		p.Power = Power{BaselineWatts: round(f.Model.BaselineWatts, 3), Watts: map[state.Name]float64{},
			Source: fmt.Sprintf("least-squares fit to meter.csv (%s): %d samples, R² %.3f, residual RMS %.2f W", res.Source, f.Samples, f.R2, f.ResidualRMS)}
		for s, w := range f.Model.Watts {
			p.Power.Watts[s] = round(math.Max(w, 0), 3)
		}
		for _, s := range f.Unidentified {
			p.Notes = append(p.Notes, fmt.Sprintf("power: %s never seen in the run: 0 W above off (an estimate; set it by hand if the simulation uses that state)", s))
		}
	} else {
		p.Notes = append(p.Notes, "power: the run has no meter.csv; a simulation with this profile has no meter")
	}
	if err := p.Check(); err != nil {
		return nil, err
	}
	return p, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func near(a, b time.Time) bool { return a.Sub(b).Abs() <= time.Millisecond }

func byWorker(ivs []energy.Interval) [][]energy.Interval {
	m := map[string][]energy.Interval{}
	var order []string
	for _, iv := range ivs {
		if _, ok := m[iv.Worker]; !ok {
			order = append(order, iv.Worker)
		}
		m[iv.Worker] = append(m[iv.Worker], iv)
	}
	sort.Strings(order)
	var out [][]energy.Interval
	for _, w := range order {
		v := m[w]
		sort.SliceStable(v, func(i, j int) bool { return v[i].Start.Before(v[j].Start) })
		out = append(out, v)
	}
	return out
}

// empirical is the distribution of v, rounded to 0.1 ms, at most
// maxSamples of them (evenly spaced in sorted order).
func empirical(v []float64) Dist {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) > maxSamples {
		t := make([]float64, maxSamples)
		for i := range t {
			t[i] = s[i*len(s)/maxSamples]
		}
		s = t
	}
	for i := range s {
		s[i] = round(s[i], 4)
	}
	return Dist{Dist: Empirical, Samples: s}
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
