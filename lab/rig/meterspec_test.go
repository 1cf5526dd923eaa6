package rig

import (
	"bytes"
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/wattsup/wattsupsim"
	"github.com/microfaas/microfaas/orchestrator/state"
)

func TestMeterCalibrateWithSimulatedWattsUp(t *testing.T) {
	// A strip drawing 12 W; the simulated meter runs 20x fast, so the
	// driver's 1 s interval is 50 ms.
	sim, err := wattsupsim.Start(wattsupsim.Options{Power: func(time.Time) float64 { return 12 },
		Link: filepath.Join(t.TempDir(), "ttyWattsUp"), Second: 50 * time.Millisecond})
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer sim.Close()
	out := filepath.Join(t.TempDir(), "states.yaml")
	var log bytes.Buffer
	answers := strings.NewReader(strings.Repeat("\n", 20))
	meter, _, err := MeterSpec{Driver: "wattsup", Device: sim.Path()}.Open()
	if err != nil {
		t.Fatal(err)
	}
	err = Calibrate(context.Background(), meter, Calibration{Out: out, Hold: 500 * time.Millisecond,
		Settle: 200 * time.Millisecond, Cycles: 1}, answers, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	m, err := energy.LoadModel(out)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(m.BaselineWatts-12) > 0.05 || math.Abs(m.Watts[state.Idle]) > 0.05 {
		t.Errorf("model %+v: a constant 12 W strip must give baseline 12 W and 0 W per state", m)
	}
	if !strings.Contains(log.String(), "Press the power button of ONE board") {
		t.Errorf("no operator prompts in:\n%s", log.String())
	}
}

func TestReadMeterStopsAfterN(t *testing.T) {
	sim, err := wattsupsim.Start(wattsupsim.Options{Power: func(time.Time) float64 { return 7.5 },
		Link: filepath.Join(t.TempDir(), "ttyWattsUp"), Second: 20 * time.Millisecond})
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer sim.Close()
	meter, _, err := MeterSpec{Driver: "wattsup", Device: sim.Path()}.Open()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := ReadMeter(context.Background(), meter, 3, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || lines[0] != "t_unix_ns,watts,source,worker" || !strings.Contains(lines[3], ",7.500,") {
		t.Errorf("want a header and 3 samples of 7.5 W, got:\n%s", out.String())
	}
}

func TestMeterSpecBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec MeterSpec
		want string
	}{
		{"sensor without board", MeterSpec{Driver: "hwmon", Sensors: []string{"ina226"}}, "--sensor"},
		{"pid not a number", MeterSpec{Driver: "cpu-time", PIDs: []string{"w0=abc"}}, "--pid"},
		{"missing config file", MeterSpec{Config: filepath.Join(t.TempDir(), "none.yaml")}, "none.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tc.spec.Open()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
}
