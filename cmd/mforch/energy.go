package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/cpumodel"
	"github.com/microfaas/microfaas/orchestrator/energy/meters"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// energyFlags configure energy accounting for serve and demo
// (docs/energy.md): the cluster file's meter: section, or, for a cluster of
// QEMU workers with none, the CPU-time model from these flags.
type energyFlags struct {
	on              bool
	idleW, perCoreW float64
	interval        time.Duration
	overhead        time.Duration
}

func (e *energyFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&e.on, "energy", true, "account energy per invocation: with the cluster file's meter: section, or for QEMU workers\n"+
		"the CPU-time model (--meter-idle-watts, --meter-watts-per-core); a MODEL, not a measurement")
	fs.Float64Var(&e.idleW, "meter-idle-watts", 0, "CPU-time model: the host's power with every VM idle (unattributed baseline)")
	fs.Float64Var(&e.perCoreW, "meter-watts-per-core", 10, "CPU-time model: power per core a QEMU worker keeps busy\n"+
		"(measure it once on a host with RAPL or a wall meter: mforch meter calibrate)")
	fs.DurationVar(&e.interval, "meter-interval", time.Second, "CPU-time model: sampling interval")
	fs.DurationVar(&e.overhead, "meter-overhead", 0, "measure metering's CPU overhead: switch the meter off and on every this long\n"+
		"(e.g. 5s) and compare mforch's own CPU time with and without it. The run's energy then misses the off windows")
}

// energyRun is a meter feeding the orchestrator's energy Accountant. It
// also records each invocation's function and final energy (it is a
// Recorder) for the run's summary.
type energyRun struct {
	acc    *energy.Accountant
	cfg    energy.Config
	meter  energy.Meter
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	orch   atomic.Pointer[orchestrator.Orchestrator] // set once New returns

	// CPU the meter's goroutine used (on its own OS thread) and for how long it ran.
	meterCPU, meterWall time.Duration
	// --meter-overhead: mforch's CPU rate (cores) in windows with and without the meter.
	window  time.Duration
	on, off []float64
	// tick drives the CPU-time model: every interval and at every worker
	// state change (nil for other meters).
	tick      chan time.Time
	tickEvery time.Duration

	mu   sync.Mutex
	rows []energyRow
}

type energyRow struct {
	function string
	e        *orchestrator.InvocationEnergy
}

// setupEnergy picks the cluster's meter: its meter: section, else the
// CPU-time model for a cluster whose workers are all QEMU VMs. It returns
// nil (no accounting) with --energy=false or when the cluster has
// BeagleBones but no meter.
func (e *energyFlags) setup(cl *cluster.Cluster, q *power.QEMU, log *slog.Logger) (*energyRun, error) {
	if !e.on {
		return nil, nil
	}
	var ids []string
	allVM := true
	for _, w := range cl.Workers {
		ids = append(ids, w.ID)
		allVM = allVM && w.Kind == cluster.KindVM
	}
	var cfg energy.Config
	switch {
	case cl.Meter != nil:
		cfg = *cl.Meter
	case allVM && q != nil:
		cfg = energy.Config{Driver: energy.DriverCPUTime, Interval: e.interval,
			Model: &energy.CPUModel{IdleWatts: e.idleW, WattsPerCore: e.perCoreW}}
		if err := cfg.Validate(ids); err != nil {
			return nil, fmt.Errorf("--meter-*: %w", err)
		}
	default:
		log.Info("no meter: the cluster file has no meter: section, so no energy is accounted (docs/energy.md)")
		return nil, nil
	}
	env := meters.Env{Workers: ids, Log: log}
	if q != nil {
		env.PIDs = q.PIDs
	}
	m, err := meters.Open(cfg, env)
	if err != nil {
		return nil, err
	}
	r := &energyRun{acc: &energy.Accountant{}, cfg: cfg, meter: m, log: log, window: e.overhead}
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

// describe says what the numbers are, for the log and the summary.
func (r *energyRun) describe() string {
	if r.cfg.Driver == energy.DriverCPUTime {
		return fmt.Sprintf("MODEL (%s, not measured): %.1f W per busy core of each QEMU worker, host idle %.1f W",
			r.meter.Source(), r.cfg.Model.WattsPerCore, r.cfg.Model.IdleWatts)
	}
	return fmt.Sprintf("%s: %s %s every %v, covering %s", energy.Label(r.meter.Source()), r.cfg.Driver,
		r.cfg.Device+r.cfg.Path, r.cfg.IntervalOrDefault(), r.cfg.Covers)
}

// start runs the meter until stop (with --meter-overhead: in every other
// window).
func (r *energyRun) start() {
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
	if r.window <= 0 {
		go func() {
			defer close(r.done)
			r.runMeter(ctx)
		}()
		return
	}
	r.log.Warn("--meter-overhead: the meter runs only every other window; this run's energy numbers are incomplete", "window", r.window)
	go func() {
		defer close(r.done)
		for on := true; ctx.Err() == nil; on = !on {
			wctx, wcancel := context.WithTimeout(ctx, r.window)
			c0, t0 := processCPU(), time.Now()
			if on {
				r.runMeter(wctx)
			} else {
				<-wctx.Done()
			}
			rate := (processCPU() - c0).Seconds() / time.Since(t0).Seconds()
			wcancel()
			if ctx.Err() != nil {
				return // a cut-short window
			}
			if on {
				r.on = append(r.on, rate)
			} else {
				r.off = append(r.off, rate)
			}
		}
	}()
}

// poke asks the CPU-time model for a reading now (dropped if one is
// already pending).
func (r *energyRun) poke(now time.Time) {
	select {
	case r.tick <- now:
	default:
	}
}

// stateChanged is the orchestrator's OnStateChange: the CPU-time model
// reads at every worker state change.
func (r *energyRun) stateChanged(c state.Change) {
	if r.tick != nil {
		r.poke(c.At)
	}
}

// runMeter runs the meter on an OS thread of its own until ctx ends,
// adding the thread's CPU time to meterCPU.
func (r *energyRun) runMeter(ctx context.Context) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c0, t0 := threadCPU(), time.Now()
	err := r.meter.Run(ctx, r.acc.Add)
	r.meterCPU += threadCPU() - c0
	r.meterWall += time.Since(t0)
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		r.log.Error("energy: the meter stopped; invocations from now on get no energy", "err", err)
	}
}

// threadCPU is the calling OS thread's CPU time; processCPU mforch's own
// (not its QEMU children's).
func threadCPU() time.Duration  { return rusage(unix.RUSAGE_THREAD) }
func processCPU() time.Duration { return rusage(unix.RUSAGE_SELF) }

func rusage(who int) time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(who, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// overhead summarises the CPU metering cost, in percent of one core.
func (r *energyRun) overhead(w io.Writer) {
	if cpu, over := r.orch.Load().EnergyCPU(); over > 0 {
		fmt.Fprintf(w, "metering CPU: attribution %v over %v (%.4f%% of a core)", cpu.Round(time.Microsecond), over.Round(time.Second), 100*cpu.Seconds()/over.Seconds())
	}
	if r.meterWall > 0 {
		fmt.Fprintf(w, "; meter %v over %v (%.4f%% of a core)", r.meterCPU.Round(time.Microsecond), r.meterWall.Round(time.Second), 100*r.meterCPU.Seconds()/r.meterWall.Seconds())
	}
	fmt.Fprintln(w)
	if len(r.on) > 1 && len(r.off) > 1 {
		mOn, sOn := meanSE(r.on)
		mOff, sOff := meanSE(r.off)
		fmt.Fprintf(w, "mforch CPU, interleaved %v windows: with the meter %.3f%% ± %.3f%% of a core (%d windows), without %.3f%% ± %.3f%% (%d); difference %+.3f%% ± %.3f%%\n",
			r.window, 100*mOn, 100*sOn, len(r.on), 100*mOff, 100*sOff, len(r.off), 100*(mOn-mOff), 100*math.Hypot(sOn, sOff))
	}
}

// meanSE is the mean and its standard error.
func meanSE(x []float64) (mean, se float64) {
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	var ss float64
	for _, v := range x {
		ss += (v - mean) * (v - mean)
	}
	return mean, math.Sqrt(ss/float64(len(x)-1)) / math.Sqrt(float64(len(x)))
}

// stop ends the meter (after the orchestrator's shutdown, which waits for
// the meter to report past the last power-off).
func (r *energyRun) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
}

// Record keeps each finished invocation's function and final energy.
func (r *energyRun) Record(inv *orchestrator.Invocation) {
	o := r.orch.Load()
	if o == nil {
		return
	}
	e := o.Energy(inv)
	if e == nil {
		return
	}
	r.mu.Lock()
	r.rows = append(r.rows, energyRow{inv.Function, e})
	r.mu.Unlock()
}

// report prints energy per invocation per function and the run's summary
// (it shuts the orchestrator down first: energy is final only then), and
// writes meter.csv, meter_boards.csv and timeline.csv into dir if set.
func (r *energyRun) report(w io.Writer, dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	o := r.orch.Load()
	o.Shutdown(ctx)
	cancel()
	r.stop() // the orchestrator has waited for the meter's last sample
	res := o.EnergyResult()
	if res == nil {
		fmt.Fprintln(w, "energy: none (the meter produced no samples)")
		return nil
	}
	type agg struct {
		n                             int
		j, boot, exec, shutdown, idle float64
	}
	by := map[string]*agg{}
	r.mu.Lock()
	for _, row := range r.rows {
		a := by[row.function]
		if a == nil {
			a = &agg{}
			by[row.function] = a
		}
		a.n++
		a.j += row.e.Joules
		a.boot += row.e.BootJ
		a.exec += row.e.ExecJ
		a.shutdown += row.e.ShutdownJ
		a.idle += row.e.IdleJ
	}
	r.mu.Unlock()
	fns := make([]string, 0, len(by))
	for fn := range by {
		fns = append(fns, fn)
	}
	sort.Strings(fns)
	kind := energy.Label(res.Source)
	fmt.Fprintf(w, "energy per invocation (%s) — %s\n", kind, r.describe())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "function\tn\tJ/inv (%s)\tboot J\texec J\tshutdown J\tidle J\t\n", kind)
	for _, fn := range fns {
		a := by[fn]
		n := float64(a.n)
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.3f\t%.3f\t%.3f\t\n", fn, a.n, a.j/n, a.boot/n, a.exec/n, a.shutdown/n, a.idle/n)
	}
	tw.Flush()
	fmt.Fprintln(w, res.Summary())
	r.overhead(w)
	if res.Fit == nil && len(res.Workers) > 0 {
		// Per-VM series: how well would one meter for all, attributed by
		// the per-state fit, have done on this run?
		var whole []energy.Sample
		for _, s := range r.acc.Samples() {
			if s.Worker == "" {
				whole = append(whole, s)
			}
		}
		if fit, err := energy.Attribute(energy.Input{Samples: whole, Intervals: r.acc.Intervals(res.End)}); err == nil && fit.Fit != nil {
			f := fit.Fit
			fmt.Fprintf(w, "per-state fit of the host series alone (%s): baseline %.2f W, booting %.2f, idle %.2f, working %.2f, stopping %.2f W per board; residual RMS %.3f W, R² %.4f over %d samples\n",
				kind, f.Model.BaselineWatts, f.Model.Watts[state.Booting], f.Model.Watts[state.Idle], f.Model.Watts[state.Working],
				f.Model.Watts[state.Stopping], f.ResidualRMS, f.R2, f.Samples)
		}
	}
	if dir == "" {
		return nil
	}
	samples := r.acc.Samples()
	for name, write := range map[string]func(io.Writer) error{
		"meter.csv":        func(w io.Writer) error { return energy.WriteMeterCSV(w, samples) },
		"meter_boards.csv": func(w io.Writer) error { return energy.WriteBoardCSV(w, samples) },
		"timeline.csv":     func(w io.Writer) error { return energy.WriteTimelineCSV(w, r.acc.Intervals(res.End)) },
	} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		err = write(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	fmt.Fprintf(w, "energy data: %s\n", filepath.Join(dir, "{meter,meter_boards,timeline}.csv"))
	return nil
}

// printEnergy is demo's (and experiment's) call: the energy table of the
// run, if energy was accounted.
func printEnergy(w io.Writer, r *running, dir string) error {
	if r.energy == nil {
		return nil
	}
	return r.energy.report(w, dir)
}
