package tco

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/lab/profile"
	"github.com/microfaas/microfaas/lab/report"
	"github.com/microfaas/microfaas/lab/sim"
)

// Simulate sizes a platform by simulation (mforch simulate's engine): the
// fewest workers of Profile, under Policy, that serve the experiment's
// calls (or the trace's) with p99 latency within the target and none
// failed. That simulated run is then the platform's run.
type Simulate struct {
	// Experiment is an experiment file (relative to the cost file): its
	// functions, invocations, arrivals, seed, mode and timeout.
	Experiment string `yaml:"experiment"`
	// Trace, if set, replaces the experiment's arrivals (a CSV of
	// timestamp,function as mforch simulate --trace reads).
	Trace   string `yaml:"trace"`
	Profile string `yaml:"profile"`
	Policy  string `yaml:"policy"`
	// P99TargetMS is the latency target, in milliseconds.
	P99TargetMS *Number `yaml:"p99_target_ms"`
	// MaxWorkers bounds the search (default 1000).
	MaxWorkers int `yaml:"max_workers"`
}

func (s *Simulate) check(what string) error {
	if s.Experiment == "" || s.Profile == "" {
		return bad("%s: simulate: give experiment: (an experiment file) and profile: (a worker profile, examples/profiles/)", what)
	}
	if _, err := cluster.ParsePolicy(s.Policy); err != nil {
		return bad("%s: simulate: policy: %v", what, err)
	}
	if err := need(s.P99TargetMS, what+": simulate: p99_target_ms", "the p99 latency the platform must keep, in ms", 0); err != nil {
		return err
	}
	if s.P99TargetMS.Value == 0 {
		return bad("%s: simulate: p99_target_ms must be above 0", what)
	}
	if s.MaxWorkers == 0 {
		s.MaxWorkers = 1000
	}
	if s.MaxWorkers < 0 {
		return bad("%s: simulate: max_workers %d: want 1 or more", what, s.MaxWorkers)
	}
	return nil
}

func (f *File) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(f.dir, p)
}

// simulate finds the platform's worker count and returns the stats of its
// run at that count (written to a temporary folder, removed after reading).
func (f *File) simulate(p Platform) (*RunStats, error) {
	s := p.Simulate
	spec, raw, err := experiment.Load(f.path(s.Experiment))
	if err != nil {
		return nil, err
	}
	prof, err := profile.Load(f.path(s.Profile))
	if err != nil {
		return nil, err
	}
	profRaw, err := os.ReadFile(f.path(s.Profile))
	if err != nil {
		return nil, err
	}
	policy, _ := cluster.ParsePolicy(s.Policy) // checked
	cfg := sim.Config{Spec: spec, File: raw, Profile: prof, ProfileFile: profRaw, Policy: policy}
	if s.Trace != "" {
		tf, err := os.Open(f.path(s.Trace))
		if err != nil {
			return nil, err
		}
		cfg.Trace, err = sim.ReadTrace(tf)
		tf.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Trace, err)
		}
		cfg.TraceName = filepath.Base(s.Trace)
	}
	target := s.P99TargetMS.Value
	tries := 0
	ok := func(n int) (bool, error) {
		tries++
		c := cfg
		c.Workers = n
		r, err := sim.Run(c)
		if err != nil {
			return false, err
		}
		return r.P99 <= target && r.Summary.Failed == 0 && r.Refused == 0, nil
	}
	// The latency falls as workers are added: bisect between 0 (too few)
	// and the bound (enough).
	if good, err := ok(s.MaxWorkers); err != nil {
		return nil, err
	} else if !good {
		return nil, fmt.Errorf("%w: platform %q: even %d workers of %s do not keep p99 within %v ms with none failed: raise simulate: max_workers or the target", ErrInput, p.Name, s.MaxWorkers, prof.Name, target)
	}
	lo, hi := 0, s.MaxWorkers
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		good, err := ok(mid)
		if err != nil {
			return nil, err
		}
		if good {
			hi = mid
		} else {
			lo = mid
		}
	}
	tmp, err := os.MkdirTemp("", "mforch-tco-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	cfg.Workers, cfg.Dir = hi, filepath.Join(tmp, "run")
	if _, err := sim.Run(cfg); err != nil {
		return nil, err
	}
	run, err := report.Load(cfg.Dir)
	if err != nil {
		return nil, err
	}
	r := FromAnalysis(report.Analyze(run))
	r.Dir = fmt.Sprintf("simulated: %s, profile %s, policy %s", s.Experiment, s.Profile, policy)
	if s.Trace != "" {
		r.Dir += ", trace " + s.Trace
	}
	r.Sized = fmt.Sprintf("the fewest workers keeping p99 ≤ %v ms, none failed (bisection, %d simulations)", target, tries)
	return r, nil
}
