package sim

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/lab/profile"
	"github.com/microfaas/microfaas/lab/report"
)

// The validation of docs/experiments.md ("Simulation"), kept as a test:
// testdata/validation holds a profile fitted (mforch profile) to run A, 60
// invocations on 2 QEMU workers in a closed loop, and run B, recorded right
// after it on the same host: 60 invocations on 3 workers under Poisson
// arrivals at 1/s (results, meter, summary, experiment file). Simulating
// B's setup on A's profile, with B's seed (so B's very arrival times),
// must land within 10% of what B measured in throughput, median latency
// and meter joules per invocation. The simulation is deterministic: this
// fails only if the simulator or the scheduler changes what it computes.
func TestSimValidationRecordedRuns(t *testing.T) {
	dir := "testdata/validation"
	prof, err := profile.Load(filepath.Join(dir, "profile-a.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	spec, raw, err := experiment.Load(filepath.Join(dir, "run-b", report.ExperimentFile))
	if err != nil {
		t.Fatal(err)
	}
	measuredRun, err := report.Load(filepath.Join(dir, "run-b"))
	if err != nil {
		t.Fatal(err)
	}
	measured := report.Analyze(measuredRun)
	pb, _ := os.ReadFile(filepath.Join(dir, "profile-a.yaml"))
	out := filepath.Join(t.TempDir(), "sim")
	if _, err := Run(Config{Spec: spec, File: raw, Profile: prof, ProfileFile: pb, Workers: spec.Workers.QEMU, Dir: out}); err != nil {
		t.Fatal(err)
	}
	simRun, err := report.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	sim := report.Analyze(simRun)
	for _, m := range []struct {
		name      string
		meas, sim float64
	}{
		{"functions per minute", measured.PerMinute, sim.PerMinute},
		{"latency p50 ms", measured.All.P50, sim.All.P50},
		{"meter J per invocation", measured.JPerInv, sim.JPerInv},
	} {
		e := m.sim/m.meas - 1
		t.Logf("%s: measured %.2f, simulated %.2f (%+.1f%%)", m.name, m.meas, m.sim, 100*e)
		if m.meas <= 0 || math.Abs(e) > 0.10 {
			t.Errorf("%s: simulated %.2f is %+.1f%% off the measured %.2f (target within 10%%)", m.name, m.sim, 100*e, m.meas)
		}
	}
}
