// Package tco compares a board cluster with a VM host serving the same
// load, as the DATE'22 MicroFaaS paper did (5.6× energy efficiency, −34.2%
// total cost of ownership against a throughput-matched x86 VM cluster),
// from inputs the reader states: each number of the cost file carries its
// source, a citation or "assumption". The paper's own inputs are not
// available to this project and are not reproduced; the method is stated
// in the report (docs/experiments.md, "Energy efficiency and cost of
// ownership").
//
// A platform's load, energy and size come from a run folder (measured,
// or written by mforch simulate), or from a model: per-unit throughput at
// the latency target and idle and busy power, sized to the reference
// run's peak rate.
package tco

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// ErrInput is wrapped by every error about a bad cost file.
var ErrInput = errors.New("bad cost file")

// Assumption is the source of a number that is the user's own.
const Assumption = "assumption"

// Number is one input and where it comes from: a citation (a page, a
// datasheet, a run) or "assumption" (optionally "assumption: why").
type Number struct {
	Value  float64 `yaml:"value"`
	Source string  `yaml:"source"`
}

// UnmarshalYAML refuses a bare number (its source would be lost) and
// keys other than value and source, naming the fix.
func (n *Number) UnmarshalYAML(v *yaml.Node) error {
	if v.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: %q: write {value: %s, source: \"where it comes from\"}, or source: assumption", v.Line, v.Value, v.Value)
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k := v.Content[i]
		switch k.Value {
		case "value":
			if err := v.Content[i+1].Decode(&n.Value); err != nil {
				return fmt.Errorf("line %d: value: want a number: %v", k.Line, err)
			}
		case "source":
			if err := v.Content[i+1].Decode(&n.Source); err != nil {
				return fmt.Errorf("line %d: source: want text: %v", k.Line, err)
			}
		default:
			return fmt.Errorf("line %d: %q: a number has only value: and source:", k.Line, k.Value)
		}
	}
	return nil
}

// IsAssumption reports whether the number is the user's own.
func (n Number) IsAssumption() bool {
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(n.Source)), Assumption)
}

// File is a cost file.
type File struct {
	Name     string `yaml:"name"`
	Currency string `yaml:"currency"`
	// ElectricityPrice is per kWh, in Currency.
	ElectricityPrice *Number `yaml:"electricity_price_per_kwh"`
	// PUE multiplies the IT energy for the facility's (cooling, power
	// delivery); 1 for none.
	PUE *Number `yaml:"pue"`
	// LifetimeYears is how long the hardware serves; a platform may
	// override it.
	LifetimeYears *Number    `yaml:"lifetime_years"`
	Platforms     []Platform `yaml:"platforms"`
	// Workload is the load when no platform has a run: its mean and peak
	// rate (invocations per second).
	Workload *Workload `yaml:"workload"`

	dir string // the file's folder: run paths are relative to it
}

// Workload is a load given by numbers instead of a run folder.
type Workload struct {
	MeanRate *Number `yaml:"mean_per_second"`
	PeakRate *Number `yaml:"peak_per_second"`
}

// Platform is one side of the comparison.
type Platform struct {
	Name string `yaml:"name"`
	// Run is a run folder (relative to the cost file): the invocations it
	// served, its duration, its meter's energy and its workers.
	Run string `yaml:"run"`
	// WorkersPerUnit is how many of the run's workers one bought unit
	// holds (VMs per host; 1 for boards).
	WorkersPerUnit int `yaml:"workers_per_unit"`
	// Model replaces Run: throughput and power per unit, from figures.
	Model *Model `yaml:"model"`
	// Simulate replaces Run: the run is simulated, with the fewest
	// workers that keep a p99 target.
	Simulate *Simulate `yaml:"simulate"`
	// UnitPrice is one unit's purchase price (a board with its power
	// supply and storage; a server).
	UnitPrice     *Number `yaml:"unit_price"`
	LifetimeYears *Number `yaml:"lifetime_years"`
	// Switch is the network: one switch per Ports units.
	Switch *Switch `yaml:"switch"`
}

// Model is a platform written from figures rather than run.
type Model struct {
	// ThroughputPerUnit is invocations per second one unit serves while
	// keeping the latency target.
	ThroughputPerUnit *Number `yaml:"throughput_per_unit"`
	// IdleWatts and BusyWatts are one unit's power idle and fully loaded;
	// between them power is taken as linear in utilisation.
	IdleWatts *Number `yaml:"idle_watts"`
	BusyWatts *Number `yaml:"busy_watts"`
}

// Switch is the network equipment a platform needs.
type Switch struct {
	Price *Number `yaml:"price"`
	Ports *Number `yaml:"ports"`
	Watts *Number `yaml:"watts"`
}

// Load reads and checks a cost file.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.dir = filepath.Dir(path)
	return f, nil
}

// Parse reads and checks a cost file; unknown keys are errors. Run paths
// are taken relative to the current folder (Load makes them relative to
// the file's).
func Parse(b []byte) (*File, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %v (examples/tco/bbb-vs-x86.yaml shows every key)", ErrInput, err)
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	return &f, nil
}

// RunPath is a platform's run folder as a path from the current folder.
func (f *File) RunPath(p Platform) string { return f.path(p.Run) }

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInput, fmt.Sprintf(format, a...))
}

// need checks a required number: present, finite, at least min, sourced.
func need(n *Number, what, fix string, min float64) error {
	if n == nil {
		return bad("%s: missing; give {value: V, source: \"where V comes from\"} (%s), or source: assumption", what, fix)
	}
	if math.IsNaN(n.Value) || math.IsInf(n.Value, 0) || n.Value < min {
		return bad("%s: value %v: want a number >= %v (%s)", what, n.Value, min, fix)
	}
	if strings.TrimSpace(n.Source) == "" {
		return bad("%s: value %v has no source: cite where it comes from (a page, a datasheet, a run), or write source: assumption", what, n.Value)
	}
	return nil
}

func (f *File) check() error {
	if f.Currency == "" {
		f.Currency = "USD"
	}
	if err := need(f.ElectricityPrice, "electricity_price_per_kwh", "your tariff per kWh, e.g. the US EIA's average retail price for your sector and state", 0); err != nil {
		return err
	}
	if err := need(f.PUE, "pue", "the facility's power usage effectiveness; 1 for none", 1); err != nil {
		return err
	}
	if len(f.Platforms) != 2 {
		return bad("platforms: give exactly two, the board cluster first and the VM host it is compared with second (got %d)", len(f.Platforms))
	}
	runs := 0
	for i := range f.Platforms {
		p := &f.Platforms[i]
		what := fmt.Sprintf("platforms[%d]", i)
		if p.Name == "" {
			return bad("%s: give it a name", what)
		}
		what = fmt.Sprintf("platform %q", p.Name)
		given := 0
		for _, set := range []bool{p.Run != "", p.Model != nil, p.Simulate != nil} {
			if set {
				given++
			}
		}
		if given > 1 {
			return bad("%s: give one of run: (a run folder), simulate: (sized by simulation) or model: (figures), not more", what)
		}
		if p.Simulate != nil {
			if err := p.Simulate.check(what); err != nil {
				return err
			}
		}
		switch {
		case p.Run != "" || p.Simulate != nil:
			runs++
			if p.WorkersPerUnit == 0 {
				p.WorkersPerUnit = 1
			}
			if p.WorkersPerUnit < 0 {
				return bad("%s: workers_per_unit %d: want 1 or more (VMs per host)", what, p.WorkersPerUnit)
			}
		case p.Model != nil:
			if p.WorkersPerUnit != 0 {
				return bad("%s: workers_per_unit is for a run's workers; a model counts units", what)
			}
			m := p.Model
			if err := need(m.ThroughputPerUnit, what+": model: throughput_per_unit", "invocations per second one unit serves within the latency target", 0); err != nil {
				return err
			}
			if m.ThroughputPerUnit.Value == 0 {
				return bad("%s: model: throughput_per_unit must be above 0 (invocations per second per unit)", what)
			}
			if err := need(m.IdleWatts, what+": model: idle_watts", "one unit's power with nothing to do, e.g. SPECpower_ssj2008's active idle", 0); err != nil {
				return err
			}
			if err := need(m.BusyWatts, what+": model: busy_watts", "one unit's power fully loaded, e.g. SPECpower_ssj2008's 100% target load", m.IdleWatts.Value); err != nil {
				return err
			}
		default:
			return bad("%s: give run: (a run folder from mforch experiment or mforch simulate), simulate: (experiment, profile, policy, p99_target_ms) or model: (throughput_per_unit, idle_watts, busy_watts)", what)
		}
		if err := need(p.UnitPrice, what+": unit_price", "what one unit costs to buy", 0); err != nil {
			return err
		}
		if p.LifetimeYears == nil {
			p.LifetimeYears = f.LifetimeYears
		}
		if err := need(p.LifetimeYears, what+": lifetime_years", "years the hardware serves; give lifetime_years at the top or per platform", 0); err != nil {
			return err
		}
		if p.LifetimeYears.Value == 0 {
			return bad("%s: lifetime_years must be above 0", what)
		}
		if s := p.Switch; s != nil {
			if err := need(s.Price, what+": switch: price", "one switch's price", 0); err != nil {
				return err
			}
			if err := need(s.Ports, what+": switch: ports", "units one switch connects", 1); err != nil {
				return err
			}
			if s.Ports.Value != math.Trunc(s.Ports.Value) {
				return bad("%s: switch: ports %v: want a whole number", what, s.Ports.Value)
			}
			if err := need(s.Watts, what+": switch: watts", "one switch's power", 0); err != nil {
				return err
			}
		}
	}
	switch {
	case runs == 0 && f.Workload == nil:
		return bad("no platform has a run: give workload: {mean_per_second: {...}, peak_per_second: {...}}, or run: or simulate: on a platform")
	case runs > 0 && f.Workload != nil:
		return bad("workload: is for files without runs; here the first platform's run is the load (remove workload:)")
	case f.Workload != nil:
		if err := need(f.Workload.MeanRate, "workload: mean_per_second", "invocations per second over the hardware's life", 0); err != nil {
			return err
		}
		if err := need(f.Workload.PeakRate, "workload: peak_per_second", "the rate to provision for", f.Workload.MeanRate.Value); err != nil {
			return err
		}
		if f.Workload.PeakRate.Value == 0 {
			return bad("workload: peak_per_second must be above 0")
		}
	}
	return nil
}
