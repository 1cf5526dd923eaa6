package meters_test

import (
	"errors"
	"testing"

	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/cpumodel"
	"github.com/microfaas/microfaas/orchestrator/energy/meters"
	"github.com/microfaas/microfaas/orchestrator/energy/sysfs"
	"github.com/microfaas/microfaas/orchestrator/energy/wattsup"
)

func TestOpenEachDriver(t *testing.T) {
	workers := []string{"bbb0", "vm0"}
	pids := func() map[string]int { return nil }
	for _, tc := range []struct {
		cfg    energy.Config
		source string
		check  func(energy.Meter) bool
	}{
		{energy.Config{Driver: "wattsup", Device: "/dev/ttyUSB0"}, wattsup.Source,
			func(m energy.Meter) bool { return m.(*wattsup.Meter).Worker == "" }},
		{energy.Config{Driver: "wattsup", Device: "/dev/ttyUSB1", Covers: "board:bbb0"}, wattsup.Source,
			func(m energy.Meter) bool { return m.(*wattsup.Meter).Worker == "bbb0" }},
		{energy.Config{Driver: "rapl"}, sysfs.SourceRAPL, nil},
		{energy.Config{Driver: "hwmon", Sensors: map[string]string{"bbb0": "ina226/bbb0", "strip": "ina226/strip"}}, sysfs.SourceHwmon,
			func(m energy.Meter) bool {
				s := m.(*sysfs.Hwmon).Sensors
				return s["bbb0"] == "ina226/bbb0" && s[""] == "ina226/strip"
			}},
		{energy.Config{Driver: "cpu-time", Model: &energy.CPUModel{IdleWatts: 40, WattsPerCore: 9}}, cpumodel.Source,
			func(m energy.Meter) bool { c := m.(*cpumodel.Meter); return c.IdleWatts == 40 && len(c.Workers) == 2 }},
	} {
		if err := tc.cfg.Validate(workers); err != nil {
			t.Fatalf("%+v: %v", tc.cfg, err)
		}
		m, err := meters.Open(tc.cfg, meters.Env{Workers: workers, PIDs: pids})
		if err != nil {
			t.Fatalf("%s: %v", tc.cfg.Driver, err)
		}
		if m.Source() != tc.source || (tc.check != nil && !tc.check(m)) {
			t.Errorf("%s: meter %+v", tc.cfg.Driver, m)
		}
	}
	_, err := meters.Open(energy.Config{Driver: "cpu-time", Model: &energy.CPUModel{WattsPerCore: 9}}, meters.Env{})
	if !errors.Is(err, energy.ErrConfig) {
		t.Errorf("cpu-time without process ids: err %v, want ErrConfig", err)
	}
}
