package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/microfaas/microfaas/lab/rig"
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
		return runMeterCalibrate(ctx, args[1:])
	}
	return fmt.Errorf("unknown meter command %q: use read or calibrate", args[0])
}

// listFlag collects a repeated flag's values.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// meterFlags registers the flags that fill a rig.MeterSpec.
func meterFlags(fs *flag.FlagSet, m *rig.MeterSpec) {
	fs.StringVar(&m.Config, "config", "", "YAML file with a meter section's fields (driver, device, interval, ...); flags override it")
	fs.StringVar(&m.Driver, "driver", "", "wattsup, rapl, hwmon or cpu-time")
	fs.StringVar(&m.Device, "device", "", "wattsup: the meter's serial port, e.g. /dev/ttyUSB0")
	fs.StringVar(&m.Path, "path", "", "rapl/hwmon: sysfs root (default /sys); cpu-time: proc root (default /proc)")
	fs.StringVar(&m.Covers, "covers", "", "what the meter covers: strip, host or board:<id>")
	fs.DurationVar(&m.Interval, "interval", 0, "sampling interval (default 1s; the WattsUp logs in whole seconds)")
	fs.Var((*listFlag)(&m.Sensors), "sensor", "hwmon: board=sensor, e.g. bbb0=ina226/bbb0 (repeat; board strip for the whole strip)")
	fs.Var((*listFlag)(&m.PIDs), "pid", "cpu-time: worker=PID of a QEMU process to model (repeat)")
	fs.Float64Var(&m.IdleWatts, "idle-watts", 0, "cpu-time: host power with every VM idle")
	fs.Float64Var(&m.WattsPerCore, "watts-per-core", 0, "cpu-time: power added per busy core")
}

func runMeterRead(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch meter read", flag.ContinueOnError)
	var spec rig.MeterSpec
	meterFlags(fs, &spec)
	n := fs.Int("n", 0, "stop after this many samples (0: until interrupted)")
	dur := fs.Duration("for", 0, "stop after this long (0: until interrupted)")
	list := fs.Bool("list", false, "list the host's RAPL zones and hwmon power sensors and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *list {
		return rig.ListSensors(spec.Path, os.Stdout)
	}
	meter, _, err := spec.Open()
	if err != nil {
		return err
	}
	if *dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *dur)
		defer cancel()
	}
	return rig.ReadMeter(ctx, meter, *n, os.Stdout)
}

func runMeterCalibrate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch meter calibrate", flag.ContinueOnError)
	var spec rig.MeterSpec
	meterFlags(fs, &spec)
	var c rig.Calibration
	fs.StringVar(&c.Out, "out", "states.yaml", "where to write the per-state model (the meter section's states: field)")
	fs.DurationVar(&c.Hold, "hold", 30*time.Second, "how long each steady state is recorded")
	fs.DurationVar(&c.Settle, "settle", 3*time.Second, "wait after each change before recording")
	fs.IntVar(&c.Cycles, "cycles", 3, "boot/shutdown cycles to average")
	if err := fs.Parse(args); err != nil {
		return err
	}
	meter, _, err := spec.Open()
	if err != nil {
		return err
	}
	return rig.Calibrate(ctx, meter, c, os.Stdin, os.Stderr)
}
