package sysfs_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/sysfs"
)

func write(t *testing.T, path string, v any) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(fmtv(v)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fmtv(v any) string {
	switch x := v.(type) {
	case int64:
		return strconv.FormatInt(x, 10)
	case int:
		return strconv.Itoa(x)
	default:
		return x.(string)
	}
}

func TestDeltaWraps(t *testing.T) {
	for _, tc := range []struct{ prev, cur, max, want int64 }{
		{100, 250, 1000, 150},
		{900, 100, 1000, 201}, // 900 -> 1000 (100), wrap to 0 (1), -> 100 (100)
		{5, 5, 1000, 0},
		{262143328850, 1000000, 262143328850, 1000001},
	} {
		if got := sysfs.Delta(tc.prev, tc.cur, tc.max); got != tc.want {
			t.Errorf("Delta(%d, %d, %d) = %d, want %d", tc.prev, tc.cur, tc.max, got, tc.want)
		}
	}
}

// raplTree is a fake /sys with two packages, a core sub-zone and a dram
// sub-zone, as on a two-socket server.
func raplTree(t *testing.T) string {
	root := t.TempDir()
	pc := filepath.Join(root, "class/powercap")
	for _, z := range []struct{ dir, name string }{
		{"intel-rapl:0", "package-0"}, {"intel-rapl:0:0", "core"}, {"intel-rapl:0:1", "dram"}, {"intel-rapl:1", "package-1"},
	} {
		write(t, filepath.Join(pc, z.dir, "name"), z.name)
		write(t, filepath.Join(pc, z.dir, "max_energy_range_uj"), int64(262143328850))
		write(t, filepath.Join(pc, z.dir, "energy_uj"), 0)
	}
	return root
}

func TestRAPLZonesSkipsSubZonesAndPrefersPsys(t *testing.T) {
	root := raplTree(t)
	z, err := sysfs.RAPLZones(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(z) != 2 || z[0].Name != "package-0" || z[1].Name != "package-1" || z[0].MaxRange != 262143328850 {
		t.Errorf("zones %+v, want the two packages", z)
	}
	write(t, filepath.Join(root, "class/powercap/intel-rapl:2/name"), "psys")
	write(t, filepath.Join(root, "class/powercap/intel-rapl:2/max_energy_range_uj"), 1000)
	write(t, filepath.Join(root, "class/powercap/intel-rapl:2/energy_uj"), 0)
	if z, _ := sysfs.RAPLZones(root); len(z) != 1 || z[0].Name != "psys" {
		t.Errorf("zones %+v, want psys alone (it includes the packages)", z)
	}
	if _, err := sysfs.RAPLZones(t.TempDir()); !errors.Is(err, sysfs.ErrNoSensor) {
		t.Errorf("no RAPL: err %v, want ErrNoSensor", err)
	}
}

func TestRAPLMeterAcrossWrap(t *testing.T) {
	root := raplTree(t)
	pkg0 := filepath.Join(root, "class/powercap/intel-rapl:0/energy_uj")
	pkg1 := filepath.Join(root, "class/powercap/intel-rapl:1/energy_uj")
	core := filepath.Join(root, "class/powercap/intel-rapl:0:0/energy_uj")
	const max = 262143328850
	write(t, pkg0, int64(max-10_000_000)) // 10 J before the wrap
	write(t, pkg1, int64(5_000_000))
	clk := clock.NewFake(time.Unix(1000, 0))
	tick := make(chan time.Time)
	samples := make(chan energy.Sample)
	m := &sysfs.RAPL{Root: root, Clock: clk, Tick: tick}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, func(s energy.Sample) { samples <- s }) }()
	<-samples // start mark
	// One second later: package 0 used 35 J across the wrap, package 1 20 J;
	// the core sub-zone's 30 J is inside package 0 and must not add.
	write(t, pkg0, int64(25_000_000-1))
	write(t, pkg1, int64(25_000_000))
	write(t, core, int64(30_000_000))
	clk.Advance(time.Second)
	tick <- time.Time{}
	s := <-samples
	if math.Abs(s.Watts-55) > 1e-6 || s.Source != sysfs.SourceRAPL {
		t.Errorf("sample %+v, want 55 W measured:rapl", s)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
}

func hwmonTree(t *testing.T) string {
	root := t.TempDir()
	hw := filepath.Join(root, "class/hwmon")
	write(t, filepath.Join(hw, "hwmon0/name"), "coretemp")
	write(t, filepath.Join(hw, "hwmon0/temp1_input"), 45000)
	for i, board := range []string{"bbb0", "bbb1"} {
		d := filepath.Join(hw, "hwmon"+strconv.Itoa(i+1))
		write(t, filepath.Join(d, "name"), "ina226")
		write(t, filepath.Join(d, "power1_input"), 1_850_000+i*100_000)
		write(t, filepath.Join(d, "power1_label"), board)
	}
	return root
}

func TestFindSensor(t *testing.T) {
	root := hwmonTree(t)
	all, err := sysfs.HwmonSensors(root)
	if err != nil || len(all) != 2 {
		t.Fatalf("sensors %+v %v, want the two INA226 power inputs", all, err)
	}
	for spec, want := range map[string]string{"ina226/bbb1": "hwmon2", "hwmon1/power1": "hwmon1", "ina226/power1": ""} {
		s, err := sysfs.FindSensor(all, spec)
		switch {
		case want == "" && !errors.Is(err, sysfs.ErrNoSensor):
			t.Errorf("%q is ambiguous: err %v", spec, err)
		case want != "" && (err != nil || filepath.Base(filepath.Dir(s.Path)) != want):
			t.Errorf("%q = %+v %v, want %s", spec, s, err, want)
		}
	}
	if _, err := sysfs.FindSensor(all, "ina219"); !errors.Is(err, sysfs.ErrNoSensor) {
		t.Errorf("missing chip: err %v", err)
	}
}

func TestHwmonMeterPerBoard(t *testing.T) {
	root := hwmonTree(t)
	clk := clock.NewFake(time.Unix(1000, 0))
	tick := make(chan time.Time)
	samples := make(chan energy.Sample, 4)
	m := &sysfs.Hwmon{Root: root, Sensors: map[string]string{"bbb0": "ina226/bbb0", "bbb1": "ina226/bbb1"}, Clock: clk, Tick: tick}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, func(s energy.Sample) { samples <- s }) }()
	a, b := <-samples, <-samples
	if a.Worker != "bbb0" || a.Watts != 1.85 || b.Worker != "bbb1" || b.Watts != 1.95 || a.Source != sysfs.SourceHwmon {
		t.Errorf("samples %+v %+v", a, b)
	}
	write(t, filepath.Join(root, "class/hwmon/hwmon1/power1_input"), 2_900_000)
	tick <- time.Time{}
	if a = <-samples; a.Watts != 2.9 {
		t.Errorf("after change: %+v, want 2.9 W", a)
	}
	<-samples
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
}
