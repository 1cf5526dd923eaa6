// Package sysfs reads power from the Linux kernel: RAPL energy counters
// under /sys/class/powercap (cumulative microjoules that wrap at
// max_energy_range_uj) for a VM host, and hwmon power sensors under
// /sys/class/hwmon (instantaneous microwatts, e.g. an INA219/INA226 on each
// board's supply). The sysfs root is injected so tests use fake trees.
package sysfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/energy"
)

// Sources of this package's samples.
const (
	SourceRAPL  = "measured:rapl"
	SourceHwmon = "measured:hwmon"
)

// ErrNoSensor is a sysfs tree without the sensor asked for.
var ErrNoSensor = errors.New("sysfs: no such power sensor")

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

func readString(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// Zone is one RAPL energy counter.
type Zone struct {
	Dir      string // e.g. /sys/class/powercap/intel-rapl:0
	Name     string // package-0, psys, dram, ...
	MaxRange int64  // max_energy_range_uj: the counter wraps to 0 past it
}

// RAPLZones finds the top-level RAPL zones under root (the sysfs mount, e.g.
// "/sys"). Sub-zones (core, uncore, dram inside a package) are left out:
// their energy is part of their package's. If a "psys" (whole platform)
// zone exists it alone is returned, since it includes the packages.
func RAPLZones(root string) ([]Zone, error) {
	dirs, _ := filepath.Glob(filepath.Join(root, "class/powercap/intel-rapl:*"))
	var zones []Zone
	for _, d := range dirs {
		if strings.Count(filepath.Base(d), ":") != 1 {
			continue // sub-zone
		}
		max, err := readInt(filepath.Join(d, "max_energy_range_uj"))
		if err != nil {
			return nil, fmt.Errorf("sysfs: %s: %w", d, err)
		}
		if _, err := readInt(filepath.Join(d, "energy_uj")); err != nil {
			return nil, fmt.Errorf("sysfs: %s: %w (reading energy_uj needs root on kernels since 5.10)", d, err)
		}
		zones = append(zones, Zone{Dir: d, Name: readString(filepath.Join(d, "name")), MaxRange: max})
	}
	if len(zones) == 0 {
		return nil, fmt.Errorf("%w: no RAPL zones under %s/class/powercap (not an Intel/AMD host, or a VM without RAPL); use the cpu-time model", ErrNoSensor, root)
	}
	for _, z := range zones {
		if z.Name == "psys" {
			return []Zone{z}, nil
		}
	}
	sort.Slice(zones, func(i, j int) bool { return zones[i].Dir < zones[j].Dir })
	return zones, nil
}

// Delta is the energy between two readings of a counter that wraps past
// max back to 0.
func Delta(prev, cur, max int64) int64 {
	if cur >= prev {
		return cur - prev
	}
	return (max - prev) + cur + 1
}

// RAPL is a meter reading RAPL counters every interval; each sample is the
// average power since the previous one.
type RAPL struct {
	Root     string        // sysfs mount (default /sys)
	Interval time.Duration // default 1s; keep it well under the wrap time (max range / max power)
	Clock    clock.Clock   // sample timestamps (nil: the system clock)
	// Tick, if set, replaces the interval timer (tests).
	Tick <-chan time.Time
}

// Source implements energy.Meter.
func (r *RAPL) Source() string { return SourceRAPL }

// Run polls the counters until ctx is cancelled.
func (r *RAPL) Run(ctx context.Context, emit func(energy.Sample)) error {
	root := r.Root
	if root == "" {
		root = "/sys"
	}
	zones, err := RAPLZones(root)
	if err != nil {
		return err
	}
	read := func() ([]int64, error) {
		v := make([]int64, len(zones))
		for i, z := range zones {
			if v[i], err = readInt(filepath.Join(z.Dir, "energy_uj")); err != nil {
				return nil, fmt.Errorf("sysfs: %s: %w", z.Dir, err)
			}
		}
		return v, nil
	}
	tick, stop := ticker(r.Tick, r.Interval)
	defer stop()
	prev, err := read()
	if err != nil {
		return err
	}
	prevAt := clock.OrReal(r.Clock).Now()
	emit(energy.Sample{At: prevAt, Source: SourceRAPL})
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
		}
		cur, err := read()
		if err != nil {
			return err
		}
		at := clock.OrReal(r.Clock).Now()
		var uj int64
		for i, z := range zones {
			uj += Delta(prev[i], cur[i], z.MaxRange)
		}
		if dt := at.Sub(prevAt).Seconds(); dt > 0 {
			emit(energy.Sample{At: at, Watts: float64(uj) / 1e6 / dt, Source: SourceRAPL})
		}
		prev, prevAt = cur, at
	}
}

func ticker(c <-chan time.Time, d time.Duration) (<-chan time.Time, func()) {
	if c != nil {
		return c, func() {}
	}
	if d <= 0 {
		d = time.Second
	}
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// Sensor is one hwmon power input.
type Sensor struct {
	Path  string // .../hwmonN/power1_input
	Chip  string // the hwmon device's name, e.g. ina226
	Label string // powerN_label, if the driver gives one
}

// HwmonSensors lists every power*_input under root's class/hwmon.
func HwmonSensors(root string) ([]Sensor, error) {
	files, _ := filepath.Glob(filepath.Join(root, "class/hwmon/hwmon*/power*_input"))
	var out []Sensor
	for _, f := range files {
		dir := filepath.Dir(f)
		base := strings.TrimSuffix(filepath.Base(f), "_input")
		out = append(out, Sensor{Path: f, Chip: readString(filepath.Join(dir, "name")),
			Label: readString(filepath.Join(dir, base+"_label"))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// FindSensor picks the sensor a config names: "chip" (the only power input
// of that chip), "chip/label", "chip/powerN", or "hwmonN/powerN".
func FindSensor(sensors []Sensor, spec string) (Sensor, error) {
	var match []Sensor
	for _, s := range sensors {
		dir := filepath.Base(filepath.Dir(s.Path))
		in := strings.TrimSuffix(filepath.Base(s.Path), "_input")
		for _, name := range []string{s.Chip, s.Chip + "/" + s.Label, s.Chip + "/" + in, dir + "/" + in} {
			if name == spec {
				match = append(match, s)
				break
			}
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		var have []string
		for _, s := range sensors {
			have = append(have, fmt.Sprintf("%s/%s (%s)", s.Chip, strings.TrimSuffix(filepath.Base(s.Path), "_input"), s.Label))
		}
		return Sensor{}, fmt.Errorf("%w: %q; this host has: %s", ErrNoSensor, spec, strings.Join(have, ", "))
	default:
		return Sensor{}, fmt.Errorf("%w: %q matches %d sensors; name one as hwmonN/powerN", ErrNoSensor, spec, len(match))
	}
}

// Hwmon is a meter reading hwmon power sensors, one per board (or one for
// the whole strip, with Worker "").
type Hwmon struct {
	Root     string            // sysfs mount (default /sys)
	Sensors  map[string]string // worker ("" for everything) -> sensor spec (see FindSensor)
	Interval time.Duration     // default 1s
	Clock    clock.Clock       // sample timestamps (nil: the system clock)
	Tick     <-chan time.Time  // tests
}

// Source implements energy.Meter.
func (h *Hwmon) Source() string { return SourceHwmon }

// Run polls the sensors until ctx is cancelled. A reading is instantaneous
// power; each sample holds it for the interval before it.
func (h *Hwmon) Run(ctx context.Context, emit func(energy.Sample)) error {
	root := h.Root
	if root == "" {
		root = "/sys"
	}
	all, err := HwmonSensors(root)
	if err != nil {
		return err
	}
	type one struct{ worker, path string }
	var use []one
	for w, spec := range h.Sensors {
		s, err := FindSensor(all, spec)
		if err != nil {
			return err
		}
		use = append(use, one{w, s.Path})
	}
	sort.Slice(use, func(i, j int) bool { return use[i].worker < use[j].worker })
	tick, stop := ticker(h.Tick, h.Interval)
	defer stop()
	for {
		at := clock.OrReal(h.Clock).Now()
		for _, u := range use {
			uw, err := readInt(u.path)
			if err != nil {
				return fmt.Errorf("sysfs: %s: %w", u.path, err)
			}
			emit(energy.Sample{At: at, Watts: float64(uw) / 1e6, Worker: u.worker, Source: SourceHwmon})
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
		}
	}
}
