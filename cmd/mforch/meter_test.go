package main

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
	err = runMeterCalibrate(context.Background(), []string{"--driver", "wattsup", "--device", sim.Path(),
		"--hold", "500ms", "--settle", "200ms", "--cycles", "1", "--out", out}, answers, &log)
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
