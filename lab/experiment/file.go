// Package experiment runs a recorded experiment: from an experiment file
// (workers, function mix, number of invocations, arrival process, seed,
// worker mode, meter) it drives an orchestrator through a small interface
// (Cluster), with the original load generator's seeded inputs spread evenly
// over the functions, and writes one run folder that lab/report
// reads: the experiment file, results.csv (written by the orchestrator's
// recorder), meter.csv, timeline.csv, build manifests, host facts and
// summary.json. docs/experiments.md describes the file and the folder.
package experiment

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/microfaas/microfaas/lab/loadgen"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/runtime/functions"
)

// ErrSpec is wrapped by every error about a bad experiment file.
var ErrSpec = errors.New("bad experiment file")

// Arrival processes.
const (
	Poisson    = "poisson"     // exponential gaps at Rate per second (open loop)
	Uniform    = "uniform"     // fixed gaps of 1/Rate (open loop)
	ClosedLoop = "closed-loop" // Concurrency callers, each waiting for its result
)

// Worker modes.
const (
	PowerCycled = "power-cycled" // a fresh boot per invocation (the original)
	Warm        = "warm"         // workers stay up for Idle after a job
)

// Spec is an experiment file.
type Spec struct {
	// Name names the run (default: the file's name without extension).
	Name    string      `yaml:"name"`
	Workers WorkersSpec `yaml:"workers"`
	// Functions is the mix, spread evenly (default: the whole suite, the
	// original's 17 functions).
	Functions   []string    `yaml:"functions"`
	Invocations int         `yaml:"invocations"`
	Arrival     ArrivalSpec `yaml:"arrival"`
	// Seed seeds the inputs and the arrival process (default 63302, the
	// original's numpy seed).
	Seed int64 `yaml:"seed"`
	// Mode is power-cycled (default) or warm.
	Mode string `yaml:"mode"`
	// Idle is how long a warm worker waits for another job (default 30s).
	Idle Duration `yaml:"idle"`
	// Timeout bounds each invocation (default 120s, the original's).
	Timeout Duration `yaml:"timeout"`
	// Meter is the power meter: none (default), or a meter section as in
	// a cluster file (docs/energy.md: driver, device, path, interval,
	// covers, sensors, model).
	Meter MeterSpec `yaml:"meter"`
	// Services: "auto" (default) starts the Redis, PostgreSQL, S3 and Kafka
	// servers the mix needs on loopback; "cluster" uses the cluster file's
	// services: section; "none" starts nothing.
	Services string `yaml:"services"`
}

// WorkersSpec says which workers run the experiment: a cluster file, or a
// number of local QEMU workers.
type WorkersSpec struct {
	Cluster string `yaml:"cluster"` // a cluster file (BeagleBones or VMs)
	QEMU    int    `yaml:"qemu"`    // local QEMU workers when there is no cluster file
	Kernel  string `yaml:"kernel"`  // default out/x86/bzImage
	Initrd  string `yaml:"initrd"`  // default out/x86/initramfs.cpio
	Accel   string `yaml:"accel"`   // auto, kvm or tcg
	// Boot is how QEMU workers start: full (default) or snapshot (restore
	// a VM saved where the worker waits for its identity; x86 only).
	Boot string `yaml:"boot"`
}

// ArrivalSpec is the arrival process.
type ArrivalSpec struct {
	Process     string  `yaml:"process"`     // poisson (default), uniform or closed-loop
	Rate        float64 `yaml:"rate"`        // invocations per second (open loop)
	Concurrency int     `yaml:"concurrency"` // closed loop: callers (default: the workers)
}

// MeterSpec is the experiment's meter: none, or an energy meter section.
type MeterSpec struct {
	None   bool
	Config energy.Config
}

// UnmarshalYAML reads "none" or a meter section.
func (m *MeterSpec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Value != "none" && n.Value != "" {
			return fmt.Errorf("line %d: meter: %q: want none or a meter section (driver: ...)", n.Line, n.Value)
		}
		*m = MeterSpec{None: true}
		return nil
	}
	m.None = false
	if err := n.Decode(&m.Config); err != nil {
		return err
	}
	if m.Config.Driver == "" {
		return fmt.Errorf("line %d: meter: give its driver (wattsup, rapl, hwmon or cpu-time), or none", n.Line)
	}
	return nil
}

// MarshalYAML writes the meter back.
func (m MeterSpec) MarshalYAML() (any, error) {
	if m.None {
		return "none", nil
	}
	return m.Config, nil
}

// String names the meter for summaries: "none" or its driver.
func (m MeterSpec) String() string {
	if m.None {
		return "none"
	}
	return m.Config.Driver
}

// Duration is a time.Duration written as "30s" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 30s or 2m", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Load reads and checks an experiment file, filling in defaults.
func Load(path string) (*Spec, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	s, err := Parse(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if s.Name == "" {
		s.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	s.resolve(filepath.Dir(path))
	return s, b, nil
}

// resolve makes the paths the file gives (kernel, initrd, cluster)
// relative to the file's own folder, as a user reading the file expects,
// whatever folder mforch runs in. Defaults (out/x86/...) stay relative to
// the current folder, where make builds them.
func (s *Spec) resolve(dir string) {
	for _, p := range []*string{&s.Workers.Kernel, &s.Workers.Initrd, &s.Workers.Cluster} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

// CheckInputs checks that the files the run needs exist, before anything
// starts (services, workers) or any run folder is made.
func (s *Spec) CheckInputs() error {
	need := func(what, path, fix string) error {
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("%w: workers: %s %s: %v; %s", ErrSpec, what, path, err, fix)
		}
		return nil
	}
	build := "build it with `make images` (bin/mfbuild worker --arch x86 --out out/x86), or give its path in the file (relative to the file)"
	if s.Workers.Cluster != "" {
		return need("cluster", s.Workers.Cluster, "give the cluster file's path relative to the experiment file")
	}
	if err := need("kernel", s.Workers.Kernel, build); err != nil {
		return err
	}
	return need("initrd", s.Workers.Initrd, build)
}

// Parse checks an experiment file's contents and fills in defaults.
func Parse(b []byte) (*Spec, error) {
	var s Spec
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSpec, err)
	}
	if err := s.defaults(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *Spec) defaults() error {
	bad := func(format string, a ...any) error { return fmt.Errorf("%w: %s", ErrSpec, fmt.Sprintf(format, a...)) }
	if len(s.Functions) == 0 {
		s.Functions = functions.CatalogueNames()
	}
	known := functions.CatalogueNames()
	for _, f := range s.Functions {
		if !slices.Contains(known, f) {
			return bad("functions: %q is not in the workload suite (known: %s)", f, strings.Join(known, ", "))
		}
	}
	if s.Invocations <= 0 {
		return bad("invocations: give how many invocations to run (the original ran 17000)")
	}
	if s.Workers.Cluster == "" && s.Workers.QEMU <= 0 {
		return bad("workers: give either cluster: FILE or qemu: N (local QEMU workers)")
	}
	if s.Workers.Cluster != "" && s.Workers.QEMU > 0 {
		return bad("workers: give cluster: or qemu:, not both")
	}
	if s.Workers.Kernel == "" {
		s.Workers.Kernel = "out/x86/bzImage"
	}
	if s.Workers.Initrd == "" {
		s.Workers.Initrd = "out/x86/initramfs.cpio"
	}
	if s.Workers.Accel == "" {
		s.Workers.Accel = "auto"
	}
	switch s.Workers.Boot {
	case "":
		s.Workers.Boot = "full"
	case "full", "snapshot":
	default:
		return bad("workers: boot %q: want full or snapshot", s.Workers.Boot)
	}
	if s.Arrival.Process == "" {
		s.Arrival.Process = Poisson
	}
	switch s.Arrival.Process {
	case Poisson, Uniform:
		if s.Arrival.Rate <= 0 {
			return bad("arrival: rate must be positive (invocations per second) for %s arrivals", s.Arrival.Process)
		}
	case ClosedLoop:
		if s.Arrival.Concurrency < 0 {
			return bad("arrival: concurrency must not be negative")
		}
	default:
		return bad("arrival: process %q: want poisson, uniform or closed-loop", s.Arrival.Process)
	}
	if s.Seed == 0 {
		s.Seed = functions.DefaultInputSeed
	}
	if s.Mode == "" {
		s.Mode = PowerCycled
	}
	switch s.Mode {
	case PowerCycled:
		if s.Idle != 0 {
			return bad("idle: only for mode: warm (a power-cycled worker powers off after each job)")
		}
	case Warm:
		if s.Idle <= 0 {
			s.Idle = Duration(30 * time.Second)
		}
	default:
		return bad("mode %q: want power-cycled or warm", s.Mode)
	}
	if s.Timeout <= 0 {
		s.Timeout = Duration(120 * time.Second)
	}
	if !s.Meter.None && s.Meter.Config.Driver == "" {
		s.Meter = MeterSpec{None: true}
	}
	if s.Services == "" {
		s.Services = "auto"
	}
	if !slices.Contains([]string{"auto", "cluster", "none"}, s.Services) {
		return bad("services %q: want auto, cluster or none", s.Services)
	}
	return nil
}

// WorkerCount is the number of workers, when the spec says it (QEMU).
func (s *Spec) WorkerCount() int { return s.Workers.QEMU }

// Calls spreads the invocations evenly over the functions, in turn, each
// taking the original generator's seeded inputs in turn.
func (s *Spec) Calls() []loadgen.Call {
	inputs := functions.GenerateInputs(s.Seed, functions.InputsPerFunction)
	calls := make([]loadgen.Call, s.Invocations)
	for i := range calls {
		fn := s.Functions[i%len(s.Functions)]
		in := inputs[fn]
		calls[i] = loadgen.Call{Function: fn, Args: in[(i/len(s.Functions))%len(in)]}
	}
	return calls
}

// Gaps returns the wait before each invocation of an open-loop process
// (nil for closed loop), seeded by the spec's seed.
func (s *Spec) Gaps() []time.Duration {
	if s.Arrival.Process == ClosedLoop {
		return nil
	}
	// defaults() has checked the process and the rate.
	gaps, err := loadgen.Arrivals(s.Arrival.Process, s.Arrival.Rate, s.Invocations, s.Seed)
	if err != nil {
		panic(fmt.Sprintf("experiment: arrivals of a checked spec: %v", err))
	}
	return gaps
}
