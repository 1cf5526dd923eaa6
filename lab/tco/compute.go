package tco

import (
	"fmt"
	"math"

	"github.com/microfaas/microfaas/lab/report"
)

// The DATE'22 paper's published results (its abstract): the board
// cluster's energy efficiency over a throughput-matched VM cluster's, and
// the change in total cost of ownership. Shown beside this file's results
// for comparison; no input of the paper is known here.
const (
	PaperEfficiencyRatio = 5.6
	PaperTCOChange       = -0.342
)

// HoursPerYear is a year of 365.25 days.
const HoursPerYear = 8766

// RunStats is what the comparison takes from a run folder.
type RunStats struct {
	Dir, Name   string
	Simulated   bool
	Invocations int     // successful
	Failed      int     //
	Seconds     float64 // the run's duration
	EnergyJ     float64 // the meter's energy over the run
	Watts       float64 // the meter's mean power
	MeterSource string
	MeterModel  bool // the meter is a model (mforch simulate, cpu-time)
	Workers     int
	PeakRate    float64 // invocations per second in the run's busiest throughput bin
	P50, P99    float64 // latency, ms
	Sized       string  // how the worker count was found, for a simulate: platform
}

// FromAnalysis takes a run's figures from the report's analysis.
func FromAnalysis(a *report.Analysis) *RunStats {
	r := &RunStats{Dir: a.Run.Dir, Name: a.Run.Name, Invocations: a.OK, Failed: a.Failed,
		Seconds: a.End.Sub(a.Start).Seconds(), EnergyJ: a.MeterJ, Watts: a.MeanWatts,
		MeterSource: a.MeterSource, MeterModel: a.MeterModel, P50: a.All.P50, P99: a.All.P99}
	if a.Run.HasSum {
		r.Workers = a.Run.Summary.Workers
		r.Simulated = a.Run.Summary.Simulated != nil
	}
	for _, p := range a.Throughput {
		r.PeakRate = math.Max(r.PeakRate, p.Y/60)
	}
	return r
}

// LoadRuns reads the run folder of each platform that names one, and
// sizes and simulates each simulate: platform.
func LoadRuns(f *File) ([2]*RunStats, error) {
	var out [2]*RunStats
	for i, p := range f.Platforms {
		if p.Simulate != nil {
			r, err := f.simulate(p)
			if err != nil {
				return out, fmt.Errorf("platform %q: %w", p.Name, err)
			}
			out[i] = r
			continue
		}
		if p.Run == "" {
			continue
		}
		run, err := report.Load(f.RunPath(p))
		if err != nil {
			return out, fmt.Errorf("platform %q: %w", p.Name, err)
		}
		out[i] = FromAnalysis(report.Analyze(run))
	}
	return out, nil
}

// Demand is the work both platforms serve.
type Demand struct {
	Mean, Peak float64 // invocations per second
	From       string  // the run folder, or "workload"
}

// PlatformResult is one platform's figures.
type PlatformResult struct {
	Platform    Platform
	Run         *RunStats // nil for a model
	Units       int
	UnitsHow    string // how Units was found
	Switches    int
	Utilisation float64 // a model's: mean load over capacity
	Watts       float64 // mean power at the plug, switches included
	InvPerJ     float64 // invocations per joule at the plug
	KWhPerYear  float64 // Watts over a year
	CapexUnits  float64
	CapexSwitch float64
	Capex       float64
	Opex        float64 // energy over the lifetime × price × PUE
	TCO         float64
	PerMillion  float64 // TCO per million invocations served over the lifetime
}

// Result is the comparison.
type Result struct {
	File      *File
	Load      Demand
	Platforms [2]PlatformResult
	// EfficiencyRatio is the first platform's invocations per joule over
	// the second's; TCOChange is (first − second) / second.
	EfficiencyRatio float64
	TCOChange       float64
	Notes           []string
}

// Compute compares the two platforms; runs[i] is platform i's run (nil
// for a model).
func Compute(f *File, runs [2]*RunStats) (*Result, error) {
	res := &Result{File: f}
	// The load: the first run folder's, else the workload's numbers.
	for i, p := range f.Platforms {
		if p.Model != nil {
			continue
		}
		r := runs[i]
		if r == nil {
			return nil, fmt.Errorf("%w: platform %q: its run was not read", ErrInput, p.Name)
		}
		if r.Invocations == 0 || r.Seconds <= 0 {
			return nil, fmt.Errorf("%w: platform %q: run %s has no successful invocation to measure", ErrInput, p.Name, r.Dir)
		}
		if r.EnergyJ <= 0 {
			return nil, fmt.Errorf("%w: platform %q: run %s has no meter energy (meter.csv): record it with a meter (docs/energy.md), or simulate it with a profile that has power:", ErrInput, p.Name, r.Dir)
		}
		if r.Workers <= 0 {
			return nil, fmt.Errorf("%w: platform %q: run %s does not say its worker count (summary.json workers)", ErrInput, p.Name, r.Dir)
		}
		if res.Load.From == "" {
			res.Load = Demand{Mean: float64(r.Invocations) / r.Seconds, Peak: r.PeakRate, From: r.Dir}
		}
	}
	if res.Load.From == "" {
		res.Load = Demand{Mean: f.Workload.MeanRate.Value, Peak: f.Workload.PeakRate.Value, From: "workload"}
	}
	price, pue := f.ElectricityPrice.Value, f.PUE.Value
	for i, p := range f.Platforms {
		pr := PlatformResult{Platform: p, Run: runs[i]}
		switchW := 0.0
		if r := runs[i]; r != nil {
			pr.Units = (r.Workers + p.WorkersPerUnit - 1) / p.WorkersPerUnit
			pr.UnitsHow = fmt.Sprintf("the run's %d workers", r.Workers)
			if r.Sized != "" {
				pr.UnitsHow = r.Sized
			}
			if p.WorkersPerUnit > 1 {
				pr.UnitsHow += fmt.Sprintf(", %d per unit", p.WorkersPerUnit)
			}
			pr.Switches, switchW = switches(p, pr.Units)
			pr.Watts = r.Watts + switchW
			pr.InvPerJ = float64(r.Invocations) / (r.EnergyJ + switchW*r.Seconds)
			if rel := float64(r.Invocations)/r.Seconds/res.Load.Mean - 1; math.Abs(rel) > 0.01 {
				res.Notes = append(res.Notes, fmt.Sprintf("%s served %.4g invocations/s, %+.1f%% off the load (%.4g/s): the two runs did not serve the same trace", p.Name, float64(r.Invocations)/r.Seconds, rel*100, res.Load.Mean))
			}
			if r.Failed > 0 {
				res.Notes = append(res.Notes, fmt.Sprintf("%s: %d invocations of the run failed; only successful ones count", p.Name, r.Failed))
			}
		} else {
			m := p.Model
			tpu := m.ThroughputPerUnit.Value
			pr.Units = max(1, int(math.Ceil(res.Load.Peak/tpu-1e-9)))
			pr.UnitsHow = fmt.Sprintf("⌈peak %.4g/s ÷ %.4g/s per unit⌉", res.Load.Peak, tpu)
			pr.Utilisation = res.Load.Mean / (float64(pr.Units) * tpu)
			pr.Switches, switchW = switches(p, pr.Units)
			pr.Watts = float64(pr.Units)*(m.IdleWatts.Value+(m.BusyWatts.Value-m.IdleWatts.Value)*pr.Utilisation) + switchW
			if pr.Watts > 0 {
				pr.InvPerJ = res.Load.Mean / pr.Watts
			}
		}
		life := p.LifetimeYears.Value
		pr.KWhPerYear = pr.Watts * HoursPerYear / 1000
		pr.CapexUnits = float64(pr.Units) * p.UnitPrice.Value
		if p.Switch != nil {
			pr.CapexSwitch = float64(pr.Switches) * p.Switch.Price.Value
		}
		pr.Capex = pr.CapexUnits + pr.CapexSwitch
		pr.Opex = pr.KWhPerYear * life * price * pue
		pr.TCO = pr.Capex + pr.Opex
		if served := res.Load.Mean * life * HoursPerYear * 3600; served > 0 {
			pr.PerMillion = pr.TCO / served * 1e6
		}
		res.Platforms[i] = pr
	}
	a, b := res.Platforms[0], res.Platforms[1]
	if b.InvPerJ > 0 {
		res.EfficiencyRatio = a.InvPerJ / b.InvPerJ
	}
	if b.TCO > 0 {
		res.TCOChange = (a.TCO - b.TCO) / b.TCO
	}
	if a.Platform.LifetimeYears.Value != b.Platform.LifetimeYears.Value {
		res.Notes = append(res.Notes, "the platforms' lifetimes differ: each TCO is over its own lifetime, so the TCO change compares unequal periods (the cost per million invocations does not)")
	}
	return res, nil
}

// switches is the switch count for units and their power.
func switches(p Platform, units int) (int, float64) {
	if p.Switch == nil {
		return 0, 0
	}
	n := int(math.Ceil(float64(units) / p.Switch.Ports.Value))
	return n, float64(n) * p.Switch.Watts.Value
}
