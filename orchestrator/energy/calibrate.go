package energy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/state"
	"gopkg.in/yaml.v3"
)

// PowerControl drives one board through its states for calibration. An
// operator at the strip can play this part (mforch meter calibrate), or the
// orchestrator with a real worker.
type PowerControl interface {
	AllOff(ctx context.Context) error     // every board off (the baseline)
	PowerOn(ctx context.Context) error    // power one board on
	WaitBooted(ctx context.Context) error // return once it is up and idle
	StartBusy(ctx context.Context) error  // keep its CPU busy
	StopBusy(ctx context.Context) error
	PowerOff(ctx context.Context) error // start shutting it down
	WaitOff(ctx context.Context) error  // return once it is off
}

// Calibration records a meter while one board goes through each state and
// derives the per-state model: the baseline with everything off, and what
// one board adds booting, idle, busy and stopping.
type Calibration struct {
	Meter   Meter
	Control PowerControl
	Hold    time.Duration // how long to record each steady state (default 30s)
	Settle  time.Duration // wait after a change before recording (default 3s)
	Cycles  int           // boot/shutdown cycles averaged (default 3)
	Clock   clock.Clock   // phase boundaries (nil: the system clock)
	// Sleep waits d (default: a timer); tests inject a fake.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Baseline names the calibration's phase with every board off.
const Baseline state.Name = "baseline"

// Phase is one recorded window of the calibration.
type Phase struct {
	State      state.Name // a worker state, or Baseline
	Start, End time.Time
	Watts      float64 // average over the window
}

// ErrCalibration is a calibration that could not measure a phase.
var ErrCalibration = errors.New("energy: calibration")

// Run performs the calibration and returns the model and the phases it
// measured.
func (c *Calibration) Run(ctx context.Context) (*StateModel, []Phase, error) {
	hold, settle, cycles := c.Hold, c.Settle, c.Cycles
	if hold <= 0 {
		hold = 30 * time.Second
	}
	if settle <= 0 {
		settle = 3 * time.Second
	}
	if cycles <= 0 {
		cycles = 3
	}
	sleep := c.Sleep
	if sleep == nil {
		sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
				return nil
			}
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var rec Recorder
	meterErr := make(chan error, 1)
	go func() { meterErr <- c.Meter.Run(ctx, rec.Add) }()

	var phases []Phase
	var err error
	step := func(f func(context.Context) error) {
		if err == nil {
			err = f(ctx)
		}
	}
	window := func(s state.Name, during func()) {
		if err != nil {
			return
		}
		p := Phase{State: s, Start: clock.OrReal(c.Clock).Now()}
		during()
		p.End = clock.OrReal(c.Clock).Now()
		phases = append(phases, p)
	}
	hold1 := func() { step(func(ctx context.Context) error { return sleep(ctx, hold) }) }
	settle1 := func(ctx context.Context) error { return sleep(ctx, settle) }

	step(c.Control.AllOff)
	step(settle1)
	window(Baseline, hold1)
	for i := 0; i < cycles; i++ {
		step(c.Control.PowerOn)
		window(state.Booting, func() { step(c.Control.WaitBooted) })
		step(settle1)
		if i == 0 {
			window(state.Idle, hold1)
			step(c.Control.StartBusy)
			step(settle1)
			window(state.Working, hold1)
			step(c.Control.StopBusy)
			step(settle1)
		}
		step(c.Control.PowerOff)
		window(state.Stopping, func() { step(c.Control.WaitOff) })
		step(settle1)
	}
	// One more interval so the last window's samples have arrived.
	step(settle1)
	cancel()
	if mErr := <-meterErr; mErr != nil && !errors.Is(mErr, context.Canceled) && err == nil {
		err = fmt.Errorf("%w: the meter failed: %w", ErrCalibration, mErr)
	}
	if err != nil {
		return nil, phases, err
	}
	segs := segments(rec.Samples())
	for i := range phases {
		p := &phases[i]
		d := p.End.Sub(p.Start).Seconds()
		if d <= 0 {
			return nil, phases, fmt.Errorf("%w: %s lasted no time", ErrCalibration, p.State)
		}
		if len(segs) == 0 || p.Start.Before(segs[0].start) || p.End.After(segs[len(segs)-1].end) {
			return nil, phases, fmt.Errorf("%w: the meter has no samples over the %s window", ErrCalibration, p.State)
		}
		p.Watts = integrate(segs, p.Start, p.End) / d
	}
	// Average each state over its windows (weighted by duration).
	sum, dur := map[state.Name]float64{}, map[state.Name]float64{}
	for _, p := range phases {
		d := p.End.Sub(p.Start).Seconds()
		sum[p.State] += p.Watts * d
		dur[p.State] += d
	}
	base := sum[Baseline] / dur[Baseline]
	m := &StateModel{Source: "calibration", BaselineWatts: base, Watts: map[state.Name]float64{}}
	for _, s := range state.On {
		m.Watts[s] = sum[s]/dur[s] - base
	}
	return m, phases, nil
}

// WriteModel saves a per-state model as YAML.
func WriteModel(path string, m *StateModel) error {
	b, err := yaml.Marshal(m)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// LoadModel reads a per-state model written by WriteModel.
func LoadModel(path string) (*StateModel, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("energy: state model: %w", err)
	}
	var m StateModel
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("energy: state model %s: %w", path, err)
	}
	for _, s := range state.On {
		if _, ok := m.Watts[s]; !ok {
			return nil, fmt.Errorf("energy: state model %s: no watts for %q: run `mforch meter calibrate` again", path, s)
		}
	}
	return &m, nil
}
