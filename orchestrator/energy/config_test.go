package energy_test

import (
	"errors"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/microfaas/microfaas/orchestrator/energy"
)

func TestConfigYAMLAndValidate(t *testing.T) {
	workers := []string{"bbb0", "bbb1", "vm0"}
	for _, tc := range []struct {
		name   string
		yaml   string
		fields []string // fields with errors; none: valid
		covers string   // after defaults
	}{
		{"wattsup on the strip", "driver: wattsup\ndevice: /dev/ttyUSB0\ninterval: 1s\n", nil, "strip"},
		{"wattsup on one board", "driver: wattsup\ndevice: /dev/ttyUSB1\ncovers: board:bbb1\n", nil, "board:bbb1"},
		{"wattsup fractional", "driver: wattsup\ndevice: /dev/ttyUSB0\ninterval: 1500ms\n", []string{"interval"}, ""},
		{"wattsup no device", "driver: wattsup\n", []string{"device"}, ""},
		{"rapl", "driver: rapl\npath: /sys\ninterval: 500ms\n", nil, "host"},
		{"rapl on a board", "driver: rapl\ncovers: board:bbb0\n", []string{"covers"}, ""},
		{"hwmon", "driver: hwmon\nsensors: {bbb0: ina226/bbb0, bbb1: hwmon3/power1}\n", nil, ""},
		{"hwmon unknown board", "driver: hwmon\nsensors: {bbb9: ina226/bbb9}\n", []string{"sensors"}, ""},
		{"cpu-time", "driver: cpu-time\nmodel: {idle_watts: 40, watts_per_core: 9.5}\n", nil, "host"},
		{"cpu-time no model", "driver: cpu-time\n", []string{"model"}, ""},
		{"cpu-time zero per core", "driver: cpu-time\nmodel: {idle_watts: 40}\n", []string{"model.watts_per_core"}, ""},
		{"unknown driver, bad board, bad interval", "driver: kill-a-watt\ncovers: board:nope\ninterval: 10ms\n", []string{"interval", "covers", "driver"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c energy.Config
			if err := yaml.Unmarshal([]byte(tc.yaml), &c); err != nil {
				t.Fatal(err)
			}
			err := c.Validate(workers)
			if len(tc.fields) == 0 {
				if err != nil {
					t.Fatalf("valid config rejected: %v", err)
				}
				if c.Covers != tc.covers {
					t.Errorf("covers %q, want %q", c.Covers, tc.covers)
				}
				return
			}
			if !errors.Is(err, energy.ErrConfig) {
				t.Fatalf("err %v, want ErrConfig", err)
			}
			for _, f := range tc.fields {
				found := false
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					var ce *energy.ConfigError
					if errors.As(e, &ce) && ce.Field == f {
						found = true
					}
				}
				if !found {
					t.Errorf("no error about %s in: %v", f, err)
				}
			}
		})
	}
	var c energy.Config
	yaml.Unmarshal([]byte("driver: rapl\ninterval: 250ms\n"), &c)
	if c.Interval != 250*time.Millisecond {
		t.Errorf("interval %v, want 250ms", c.Interval)
	}
}
