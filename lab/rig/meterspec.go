package rig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/meters"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// MeterSpec describes one meter outside a cluster file (mforch meter):
// an optional YAML file with a meter section's fields, and fields that
// override it.
type MeterSpec struct {
	Config                       string // YAML file with a meter section's fields
	Driver, Device, Path, Covers string
	Interval                     time.Duration
	IdleWatts, WattsPerCore      float64  // cpu-time model
	Sensors                      []string // hwmon: board=sensor
	PIDs                         []string // cpu-time: worker=PID
}

// Open builds, validates and opens the meter.
func (m MeterSpec) Open() (energy.Meter, energy.Config, error) {
	var cfg energy.Config
	if m.Config != "" {
		b, err := os.ReadFile(m.Config)
		if err != nil {
			return nil, cfg, err
		}
		if err := yaml.Unmarshal(b, &cfg); err != nil {
			return nil, cfg, fmt.Errorf("%s: %w", m.Config, err)
		}
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.Driver, m.Driver)
	set(&cfg.Device, m.Device)
	set(&cfg.Path, m.Path)
	set(&cfg.Covers, m.Covers)
	if m.Interval != 0 {
		cfg.Interval = m.Interval
	}
	var workers []string
	for _, s := range m.Sensors {
		w, spec, ok := strings.Cut(s, "=")
		if !ok {
			return nil, cfg, fmt.Errorf("--sensor %q: use board=sensor", s)
		}
		if cfg.Sensors == nil {
			cfg.Sensors = map[string]string{}
		}
		cfg.Sensors[w] = spec
		workers = append(workers, w)
	}
	pids := map[string]int{}
	for _, s := range m.PIDs {
		w, p, ok := strings.Cut(s, "=")
		n, err := strconv.Atoi(p)
		if !ok || err != nil {
			return nil, cfg, fmt.Errorf("--pid %q: use worker=PID", s)
		}
		pids[w] = n
		workers = append(workers, w)
	}
	if m.IdleWatts != 0 || m.WattsPerCore != 0 {
		cfg.Model = &energy.CPUModel{IdleWatts: m.IdleWatts, WattsPerCore: m.WattsPerCore}
	}
	if id := strings.TrimPrefix(cfg.Covers, "board:"); id != cfg.Covers {
		workers = append(workers, id)
	}
	for w := range cfg.Sensors {
		workers = append(workers, w)
	}
	if err := cfg.Validate(workers); err != nil {
		return nil, cfg, err
	}
	meter, err := meters.Open(cfg, meters.Env{Workers: workers, PIDs: func() map[string]int { return pids }})
	return meter, cfg, err
}

// ReadMeter prints meter's samples to w as CSV until ctx ends or, if n >
// 0, after n samples.
func ReadMeter(ctx context.Context, meter energy.Meter, n int, w io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if energy.IsModel(meter.Source()) {
		fmt.Fprintf(w, "# %s is a MODEL, not a measurement\n", meter.Source())
	}
	fmt.Fprintln(w, "t_unix_ns,watts,source,worker")
	count := 0
	err := meter.Run(ctx, func(s energy.Sample) {
		fmt.Fprintf(w, "%d,%.3f,%s,%s\n", s.At.UnixNano(), s.Watts, s.Source, s.Worker)
		if count++; n > 0 && count >= n {
			cancel()
		}
	})
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// Calibration is how mforch meter calibrate measures one board.
type Calibration struct {
	Out    string        // where the per-state model is written
	Hold   time.Duration // how long each steady state is recorded
	Settle time.Duration // wait after each change before recording
	Cycles int           // boot/shutdown cycles to average
}

// Calibrate walks an operator (answering on in, prompted on out) through
// one board's states, measured with meter, and writes the per-state
// model to c.Out.
func Calibrate(ctx context.Context, meter energy.Meter, c Calibration, in io.Reader, out io.Writer) error {
	cal := &energy.Calibration{Meter: meter, Control: NewOperator(in, out),
		Hold: c.Hold, Settle: c.Settle, Cycles: c.Cycles}
	m, phases, err := cal.Run(ctx)
	for _, p := range phases {
		fmt.Fprintf(out, "%-9s %8.3f W over %v\n", p.State, p.Watts, p.End.Sub(p.Start).Round(time.Millisecond))
	}
	if err != nil {
		return err
	}
	if err := energy.WriteModel(c.Out, m); err != nil {
		return err
	}
	fmt.Fprintf(out, "baseline %.3f W; one board adds: booting %.3f W, idle %.3f W, working %.3f W, stopping %.3f W (%s)\nwrote %s\n",
		m.BaselineWatts, m.Watts[state.Booting], m.Watts[state.Idle], m.Watts[state.Working], m.Watts[state.Stopping],
		energy.Label(meter.Source()), c.Out)
	return nil
}
