package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/microfaas/microfaas/lab/rig"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/meters"
	"github.com/microfaas/microfaas/orchestrator/state"
)

const meterUsage = `usage: mforch meter read      [meter flags] [-n N] [--for D] [--list]
       mforch meter calibrate [meter flags] [--out states.yaml] [--hold 30s] [--settle 3s] [--cycles 3]

read prints live power samples as CSV (t_unix_ns,watts,source,worker);
calibrate walks you through baseline, boot, idle, busy and shutdown of one
board and writes the per-state power model attribution uses.
Run mforch meter read -h or mforch meter calibrate -h for the flags.`

func runMeter(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(os.Stderr, meterUsage)
		if len(args) == 0 {
			return fmt.Errorf("say read or calibrate")
		}
		return flag.ErrHelp
	}
	switch args[0] {
	case "read":
		return runMeterRead(ctx, args[1:])
	case "calibrate":
		return runMeterCalibrate(ctx, args[1:], os.Stdin, os.Stderr)
	}
	return fmt.Errorf("unknown meter command %q: use read or calibrate", args[0])
}

// meterFlags describe a meter on the command line or in a file holding a
// cluster file's meter: section.
type meterFlags struct {
	config, driver, device, path, covers string
	interval                             time.Duration
	idleW, perCoreW                      float64
	sensors, pids                        listFlag
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func (m *meterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.config, "config", "", "YAML file with a meter section's fields (driver, device, interval, ...); flags override it")
	fs.StringVar(&m.driver, "driver", "", "wattsup, rapl, hwmon or cpu-time")
	fs.StringVar(&m.device, "device", "", "wattsup: the meter's serial port, e.g. /dev/ttyUSB0")
	fs.StringVar(&m.path, "path", "", "rapl/hwmon: sysfs root (default /sys); cpu-time: proc root (default /proc)")
	fs.StringVar(&m.covers, "covers", "", "what the meter covers: strip, host or board:<id>")
	fs.DurationVar(&m.interval, "interval", 0, "sampling interval (default 1s; the WattsUp logs in whole seconds)")
	fs.Var(&m.sensors, "sensor", "hwmon: board=sensor, e.g. bbb0=ina226/bbb0 (repeat; board strip for the whole strip)")
	fs.Var(&m.pids, "pid", "cpu-time: worker=PID of a QEMU process to model (repeat)")
	fs.Float64Var(&m.idleW, "idle-watts", 0, "cpu-time: host power with every VM idle")
	fs.Float64Var(&m.perCoreW, "watts-per-core", 0, "cpu-time: power added per busy core")
}

// open builds, validates and opens the meter.
func (m *meterFlags) open() (energy.Meter, energy.Config, error) {
	var cfg energy.Config
	if m.config != "" {
		b, err := os.ReadFile(m.config)
		if err != nil {
			return nil, cfg, err
		}
		if err := yaml.Unmarshal(b, &cfg); err != nil {
			return nil, cfg, fmt.Errorf("%s: %w", m.config, err)
		}
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.Driver, m.driver)
	set(&cfg.Device, m.device)
	set(&cfg.Path, m.path)
	set(&cfg.Covers, m.covers)
	if m.interval != 0 {
		cfg.Interval = m.interval
	}
	var workers []string
	for _, s := range m.sensors {
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
	for _, s := range m.pids {
		w, p, ok := strings.Cut(s, "=")
		n, err := strconv.Atoi(p)
		if !ok || err != nil {
			return nil, cfg, fmt.Errorf("--pid %q: use worker=PID", s)
		}
		pids[w] = n
		workers = append(workers, w)
	}
	if m.idleW != 0 || m.perCoreW != 0 {
		cfg.Model = &energy.CPUModel{IdleWatts: m.idleW, WattsPerCore: m.perCoreW}
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

func runMeterRead(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch meter read", flag.ContinueOnError)
	var mf meterFlags
	mf.register(fs)
	n := fs.Int("n", 0, "stop after this many samples (0: until interrupted)")
	dur := fs.Duration("for", 0, "stop after this long (0: until interrupted)")
	list := fs.Bool("list", false, "list the host's RAPL zones and hwmon power sensors and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *list {
		return rig.ListSensors(mf.path, os.Stdout)
	}
	meter, _, err := mf.open()
	if err != nil {
		return err
	}
	if *dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *dur)
		defer cancel()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if energy.IsModel(meter.Source()) {
		fmt.Printf("# %s is a MODEL, not a measurement\n", meter.Source())
	}
	fmt.Println("t_unix_ns,watts,source,worker")
	count := 0
	err = meter.Run(ctx, func(s energy.Sample) {
		fmt.Printf("%d,%.3f,%s,%s\n", s.At.UnixNano(), s.Watts, s.Source, s.Worker)
		if count++; *n > 0 && count >= *n {
			cancel()
		}
	})
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

func runMeterCalibrate(ctx context.Context, args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("mforch meter calibrate", flag.ContinueOnError)
	var mf meterFlags
	mf.register(fs)
	path := fs.String("out", "states.yaml", "where to write the per-state model (the meter section's states: field)")
	hold := fs.Duration("hold", 30*time.Second, "how long each steady state is recorded")
	settle := fs.Duration("settle", 3*time.Second, "wait after each change before recording")
	cycles := fs.Int("cycles", 3, "boot/shutdown cycles to average")
	if err := fs.Parse(args); err != nil {
		return err
	}
	meter, _, err := mf.open()
	if err != nil {
		return err
	}
	cal := &energy.Calibration{Meter: meter, Control: rig.NewOperator(in, out),
		Hold: *hold, Settle: *settle, Cycles: *cycles}
	m, phases, err := cal.Run(ctx)
	for _, p := range phases {
		fmt.Fprintf(out, "%-9s %8.3f W over %v\n", p.State, p.Watts, p.End.Sub(p.Start).Round(time.Millisecond))
	}
	if err != nil {
		return err
	}
	if err := energy.WriteModel(*path, m); err != nil {
		return err
	}
	fmt.Fprintf(out, "baseline %.3f W; one board adds: booting %.3f W, idle %.3f W, working %.3f W, stopping %.3f W (%s)\nwrote %s\n",
		m.BaselineWatts, m.Watts[state.Booting], m.Watts[state.Idle], m.Watts[state.Working], m.Watts[state.Stopping],
		energy.Label(meter.Source()), *path)
	return nil
}
