package energy_test

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/wattsup"
	"github.com/microfaas/microfaas/orchestrator/energy/wattsup/wattsupsim"
)

// TestEndToEndWattsUpStrip runs the original's setup in miniature: one
// WattsUp on the strip (the simulator on a real pty, 20x fast, with line
// noise), the real driver, four boards power-cycling through a synthetic
// timeline, and attribution from the run's own data.
func TestEndToEndWattsUpStrip(t *testing.T) {
	const second = 50 * time.Millisecond // one protocol second of the simulated meter
	start := time.Now().Add(300 * time.Millisecond)
	d := 6 * time.Second
	ivs := synthTimeline(42, 4, start, d, 0.15)
	acc := &energy.Accountant{}
	sim, err := wattsupsim.Start(wattsupsim.Options{
		Power: func(t time.Time) float64 { return bbb.power(ivs, t) },
		Link:  filepath.Join(t.TempDir(), "ttyWattsUp"), Second: second,
		Noise: wattsupsim.Noise{Seed: 3, Garbage: 0.2, Split: 0.2, Truncate: 0.02},
	})
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer sim.Close()
	meter := &wattsup.Meter{Device: sim.Path(), Interval: time.Second, Stall: time.Second}
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(d))
	defer cancel()
	if err := meter.Run(ctx, acc.Add); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("meter: %v", err)
	}
	// The orchestrator would call acc.Observe on every state change; here
	// the timeline is known in advance.
	samples := acc.Samples()
	res, err := energy.Attribute(energy.Input{Samples: samples, Intervals: ivs})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Summary())

	// 1. Everything adds up: invocations + unattributed = the meter's total.
	var inv float64
	for _, e := range res.Invocations {
		inv += e.TotalJ()
	}
	if got := inv + res.Unattributed.TotalJ(); math.Abs(got-res.TotalJ) > 0.01*res.TotalJ {
		t.Errorf("invocations %.2f J + unattributed %.2f J = %.2f J; meter total %.2f J", inv, res.Unattributed.TotalJ(), got, res.TotalJ)
	}
	// 2. The meter's total is the schedule's true energy over the same
	// window, within 1%, through the pty, the noise and the driver.
	first, last := samples[0].At, samples[len(samples)-1].At
	truthJ := bbb.cumulative(ivs, first, []time.Time{last})[0]
	within(t, "meter total vs true energy", res.TotalJ, truthJ, 0.01)
	// 3. Per-invocation joules are close to the truth (the fit is from
	// ~120 noisy samples of a 6 s run, so looser than the 2% of long runs:
	// within 5% for their sum).
	tr := bbb.invocationTruth(ivs)
	var trSum float64
	for _, j := range tr {
		trSum += j
	}
	within(t, "all invocations", inv, trSum, 0.05)
	if res.Fit == nil || res.Fit.R2 < 0.8 {
		t.Errorf("fit %+v: the per-state model should explain the strip's power", res.Fit)
	}
	if meter.Dropped == 0 {
		t.Error("no packet was dropped: the noise did not reach the driver")
	}
}
