package rig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/cpumodel"
	"github.com/microfaas/microfaas/orchestrator/energy/meters"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// meterRun runs a meter into the Accountant the orchestrator attributes
// from (orchestrator.Config.Energy). It is made before the orchestrator and
// knows nothing of it: the orchestrator calls its observer at every state
// change.
type meterRun struct {
	acc      *energy.Accountant
	cfg      energy.Config
	history  time.Duration // orchestrator.Config.EnergyKeep
	meter    energy.Meter
	log      *slog.Logger
	onSample func(energy.Sample)
	cancel   context.CancelFunc
	done     chan struct{}
	// tick drives the CPU-time model: every interval and at every worker
	// state change (nil for other meters).
	tick      chan time.Time
	tickEvery time.Duration
}

// setupMeter picks the meter: Energy.Meter, else the cluster's meter:
// section, else the CPU-time model for a cluster whose workers are all QEMU
// VMs. It returns nil (no accounting) without Config.Energy or when the
// cluster has BeagleBones but no meter.
func setupMeter(c Config, q *power.QEMU) (*meterRun, error) {
	if c.Energy == nil {
		return nil, nil
	}
	var ids []string
	allVM := true
	for _, w := range c.Cluster.Workers {
		ids = append(ids, w.ID)
		allVM = allVM && w.Kind == cluster.KindVM
	}
	var cfg energy.Config
	switch {
	case c.Energy.Meter != nil:
		cfg = *c.Energy.Meter
	case c.Cluster.Meter != nil:
		cfg = *c.Cluster.Meter
	case allVM && q != nil:
		model := c.Energy.Model
		cfg = energy.Config{Driver: energy.DriverCPUTime, Interval: c.Energy.Interval, Model: &model}
	default:
		c.Log.Info("no meter: the cluster file has no meter: section, so no energy is accounted (docs/energy.md)")
		return nil, nil
	}
	if err := cfg.Validate(ids); err != nil {
		return nil, fmt.Errorf("meter: %w", err)
	}
	env := meters.Env{Workers: ids, Log: c.Log}
	if q != nil {
		env.PIDs = q.PIDs
	}
	m, err := meters.Open(cfg, env)
	if err != nil {
		return nil, err
	}
	r := &meterRun{acc: &energy.Accountant{}, cfg: cfg, meter: m, log: c.Log, onSample: c.OnSample, history: c.Energy.Keep}
	if cm, ok := m.(*cpumodel.Meter); ok {
		// Read the VMs' CPU time at every state change too, so each
		// state's CPU is its own (a 30 ms job would otherwise get the
		// average of the second it falls in, and the CPU of a VM's last
		// partial interval is lost when its process exits).
		r.tick, r.tickEvery = make(chan time.Time, 1), cfg.IntervalOrDefault()
		cm.Tick = r.tick
	}
	if cfg.States != "" {
		if r.acc.Model, err = energy.LoadModel(cfg.States); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// keep is the attribution history to keep (0, the orchestrator's
// default, without a meter).
func (r *meterRun) keep() time.Duration {
	if r == nil {
		return 0
	}
	return r.history
}

// describe says what the numbers are, for the log.
func (r *meterRun) describe() string {
	if r.cfg.Driver == energy.DriverCPUTime {
		return fmt.Sprintf("MODEL (%s, not measured): %.1f W per busy core of each QEMU worker, host idle %.1f W",
			r.meter.Source(), r.cfg.Model.WattsPerCore, r.cfg.Model.IdleWatts)
	}
	return fmt.Sprintf("%s: %s %s every %v, covering %s", energy.Label(r.meter.Source()), r.cfg.Driver,
		r.cfg.Device+r.cfg.Path, r.cfg.IntervalOrDefault(), r.cfg.Covers)
}

// start runs the meter until stop.
func (r *meterRun) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	r.log.Info("energy accounting", "meter", r.describe())
	if r.tick != nil {
		go func() {
			t := time.NewTicker(r.tickEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case now := <-t.C:
					r.poke(now)
				}
			}
		}()
	}
	go func() {
		defer close(r.done)
		r.run(ctx)
	}()
}

// run runs the meter on an OS thread of its own until ctx ends and logs
// the CPU time that thread used (the meter's own cost, docs/energy.md).
func (r *meterRun) run(ctx context.Context) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c0, t0 := threadCPU(), time.Now()
	err := r.meter.Run(ctx, r.add)
	cpu, wall := threadCPU()-c0, time.Since(t0)
	if err != nil && !errors.Is(err, context.Canceled) {
		r.log.Error("energy: the meter stopped; invocations from now on get no energy", "err", err)
	}
	if wall > 0 {
		r.log.Info("energy: the meter's CPU", "cpu", cpu.Round(time.Microsecond), "over", wall.Round(time.Second),
			"percent_of_a_core", fmt.Sprintf("%.4f", 100*cpu.Seconds()/wall.Seconds()))
	}
}

func (r *meterRun) add(s energy.Sample) {
	r.acc.Add(s)
	if r.onSample != nil {
		r.onSample(s)
	}
}

// poke asks the CPU-time model for a reading now (dropped if one is
// already pending).
func (r *meterRun) poke(now time.Time) {
	select {
	case r.tick <- now:
	default:
	}
}

// observer is the orchestrator's OnStateChange: the CPU-time model reads at
// every worker state change; then next, if set, observes it too.
func (r *meterRun) observer(next func(state.Change)) func(state.Change) {
	return func(c state.Change) {
		if r.tick != nil {
			r.poke(c.At)
		}
		if next != nil {
			next(c)
		}
	}
}

// stop ends the meter (after the orchestrator's shutdown, which waits for
// the meter to report past the last power-off).
func (r *meterRun) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}

// threadCPU is the calling OS thread's CPU time.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_THREAD, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
