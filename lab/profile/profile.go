// Package profile describes how a kind of worker behaves in time and
// power, for the simulator (lab/sim): its boot, reboot and shutdown time
// distributions, its functions' execution times, and its power in each
// state. A profile is fitted from a recorded run folder (Fit, mforch
// profile) or written by hand from published figures
// (examples/profiles/bbb-srm.yaml cites each number's source).
package profile

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// ErrProfile is wrapped by every error about a bad profile.
var ErrProfile = errors.New("bad profile")

// Profile is one kind of worker's timings and power. Times are seconds.
type Profile struct {
	Name string `yaml:"name"`
	// Kind is the cluster worker kind it models: bbb (counts as off after
	// the power-off holdoff) or vm (its controller reports exits).
	Kind string `yaml:"kind"`
	// Source says where the numbers come from: a run folder, or papers.
	Source string   `yaml:"source"`
	Notes  []string `yaml:"notes,omitempty"`
	// Boot is power-on to the worker's hello.
	Boot Dist `yaml:"boot"`
	// Reboot is told to reboot to the hello of the new boot.
	Reboot Dist `yaml:"reboot"`
	// Shutdown is told to power off to off.
	Shutdown Dist `yaml:"shutdown"`
	// Exec is each function's execution time as the worker measures it;
	// "default" is for functions not listed.
	Exec map[string]Dist `yaml:"exec"`
	// Overhead is a job's time on the orchestrator's clock beyond its
	// execution: sending the job, the result's way back.
	Overhead Dist `yaml:"overhead"`
	// Power is what the meter sees; absent (no watts) means the
	// simulated run has no meter.csv.
	Power Power `yaml:"power"`
}

// Power is a linear per-state model, as energy.StateModel: a baseline,
// plus each worker's power in its state.
type Power struct {
	Source string `yaml:"source,omitempty"`
	// BaselineWatts is drawn whatever the workers do: switch and
	// orchestrator on a strip, the idle host for VMs.
	BaselineWatts float64 `yaml:"baseline_watts"`
	// OffWatts is each worker's draw while off.
	OffWatts float64 `yaml:"off_watts"`
	// Watts is each worker's draw in each on-state above OffWatts.
	Watts map[state.Name]float64 `yaml:"watts"`
}

// Has reports whether the profile has a power model.
func (p Power) Has() bool { return len(p.Watts) > 0 || p.BaselineWatts > 0 }

// Dist is a distribution of durations in seconds.
type Dist struct {
	// Dist is const (Mean), normal (Mean, SD; drawn again below Min),
	// lognormal (Mean, SD of the durations themselves), uniform (Min,
	// Max) or empirical (Samples, drawn with replacement).
	Dist    string    `yaml:"dist"`
	Mean    float64   `yaml:"mean,omitempty"`
	SD      float64   `yaml:"sd,omitempty"`
	Min     float64   `yaml:"min,omitempty"`
	Max     float64   `yaml:"max,omitempty"`
	Samples []float64 `yaml:"samples,omitempty,flow"`
}

// Distributions.
const (
	Const     = "const"
	Normal    = "normal"
	LogNormal = "lognormal"
	Uniform   = "uniform"
	Empirical = "empirical"
)

// Set reports whether d is given.
func (d Dist) Set() bool { return d.Dist != "" }

func (d Dist) check(what string) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrProfile, what, fmt.Sprintf(format, a...))
	}
	switch d.Dist {
	case Const:
		if d.Mean < 0 {
			return bad("mean must not be negative")
		}
	case Normal, LogNormal:
		if d.Mean <= 0 || d.SD < 0 {
			return bad("give mean > 0 and sd >= 0 (seconds)")
		}
	case Uniform:
		if d.Min < 0 || d.Max < d.Min {
			return bad("give 0 <= min <= max (seconds)")
		}
	case Empirical:
		if len(d.Samples) == 0 {
			return bad("empirical needs samples (seconds)")
		}
		for _, s := range d.Samples {
			if s < 0 || math.IsNaN(s) || math.IsInf(s, 0) {
				return bad("sample %v is not a duration in seconds", s)
			}
		}
	default:
		return bad("dist %q: want const, normal, lognormal, uniform or empirical", d.Dist)
	}
	return nil
}

// Draw returns one duration in seconds (never negative).
func (d Dist) Draw(r *rand.Rand) float64 {
	switch d.Dist {
	case Const:
		return d.Mean
	case Normal:
		for range 100 {
			if v := d.Mean + d.SD*r.NormFloat64(); v >= d.Min && v >= 0 {
				return v
			}
		}
		return max(d.Mean, d.Min, 0)
	case LogNormal:
		s2 := math.Log(1 + d.SD*d.SD/(d.Mean*d.Mean))
		return math.Exp(math.Log(d.Mean) - s2/2 + math.Sqrt(s2)*r.NormFloat64())
	case Uniform:
		return d.Min + (d.Max-d.Min)*r.Float64()
	case Empirical:
		return d.Samples[r.IntN(len(d.Samples))]
	}
	return 0
}

// MeanOf is the distribution's mean, for summaries.
func (d Dist) MeanOf() float64 {
	switch d.Dist {
	case Uniform:
		return (d.Min + d.Max) / 2
	case Empirical:
		s := 0.0
		for _, v := range d.Samples {
			s += v
		}
		return s / float64(len(d.Samples))
	}
	return d.Mean
}

// ExecOf is function's execution time distribution, and false when the
// profile has neither it nor a default.
func (p *Profile) ExecOf(function string) (Dist, bool) {
	if d, ok := p.Exec[function]; ok {
		return d, true
	}
	d, ok := p.Exec["default"]
	return d, ok
}

// Check checks a profile and fills in what may be left out: reboot
// defaults to boot plus shutdown's mean, overhead to 0.
func (p *Profile) Check() error {
	if p.Name == "" {
		return fmt.Errorf("%w: give it a name", ErrProfile)
	}
	if p.Kind != cluster.KindBBB && p.Kind != cluster.KindVM {
		return fmt.Errorf("%w: kind %q: want %s or %s", ErrProfile, p.Kind, cluster.KindBBB, cluster.KindVM)
	}
	if !p.Boot.Set() || !p.Shutdown.Set() {
		return fmt.Errorf("%w: give boot and shutdown distributions", ErrProfile)
	}
	if len(p.Exec) == 0 {
		return fmt.Errorf("%w: exec: give each function's execution time, or a default", ErrProfile)
	}
	if !p.Reboot.Set() {
		p.Reboot = p.Boot
		p.Notes = append(p.Notes, "reboot: not given; taken as the boot's distribution")
	}
	if !p.Overhead.Set() {
		p.Overhead = Dist{Dist: Const}
	}
	for _, c := range []struct {
		what string
		d    Dist
	}{{"boot", p.Boot}, {"reboot", p.Reboot}, {"shutdown", p.Shutdown}, {"overhead", p.Overhead}} {
		if err := c.d.check(c.what); err != nil {
			return err
		}
	}
	for _, f := range slices.Sorted(maps.Keys(p.Exec)) {
		if err := p.Exec[f].check("exec: " + f); err != nil {
			return err
		}
	}
	for s, w := range p.Power.Watts {
		if !state.IsOn(s) {
			return fmt.Errorf("%w: power: watts: %q is not a state a worker draws power in (booting, idle, working, stopping)", ErrProfile, s)
		}
		if w < 0 || math.IsNaN(w) {
			return fmt.Errorf("%w: power: watts: %s: %v W", ErrProfile, s, w)
		}
	}
	if p.Power.BaselineWatts < 0 || p.Power.OffWatts < 0 {
		return fmt.Errorf("%w: power: baseline_watts and off_watts must not be negative", ErrProfile)
	}
	return nil
}

// Load reads and checks a profile file.
func Load(path string) (*Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Parse reads and checks a profile; unknown keys are errors.
func Parse(b []byte) (*Profile, error) {
	var p Profile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProfile, err)
	}
	if err := p.Check(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Marshal writes the profile as YAML, with a header comment.
func (p *Profile) Marshal(header string) ([]byte, error) {
	b, err := yaml.Marshal(p)
	if err != nil {
		return nil, err
	}
	var out strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(header), "\n") {
		if l != "" {
			out.WriteString("# " + l + "\n")
		}
	}
	out.Write(b)
	return []byte(out.String()), nil
}
