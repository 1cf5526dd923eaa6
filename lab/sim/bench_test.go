package sim

import (
	"testing"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/lab/profile"
)

// BenchmarkRack100x24h is the simulator's speed target: 100 BeagleBone
// boards under a day of Poisson arrivals must simulate in under 60 s on
// the development host (docs/experiments.md has the measured figure). It
// reports the events handled and the simulated hours per wall second.
func BenchmarkRack100x24h(b *testing.B) {
	prof, err := profile.Load("../../examples/profiles/bbb-srm.yaml")
	if err != nil {
		b.Fatal(err)
	}
	// About 60% of what 100 boards sustain with a ~4.2 s boot+exec and
	// the 10 s holdoff: ~14.5 s per job and board, so ~6.9/s at most.
	const rate = 4.0
	spec := &experiment.Spec{Name: "rack", Functions: []string{"float_operations", "matmul", "cascading_sha256"},
		Invocations: int(rate * 86400), Arrival: experiment.ArrivalSpec{Process: experiment.Poisson, Rate: rate},
		Seed: 1, Mode: experiment.PowerCycled, Timeout: experiment.Duration(120 * time.Second)}
	for _, pol := range []string{"off", "reboot-while-queued", "warm-pool=5"} {
		p, _ := cluster.ParsePolicy(pol)
		b.Run(pol, func(b *testing.B) {
			for range b.N {
				res, err := Run(Config{Spec: spec, Profile: prof, Workers: 100, Policy: p, Dir: b.TempDir()})
				if err != nil {
					b.Fatal(err)
				}
				if res.Summary.Done != spec.Invocations {
					b.Fatalf("done %d of %d", res.Summary.Done, spec.Invocations)
				}
				b.ReportMetric(float64(res.Events), "events")
				b.ReportMetric(res.Summary.Simulated.SimulatedSeconds/3600/res.Wall.Seconds(), "sim-h/s")
				b.ReportMetric(float64(res.Summary.Failed), "failed")
			}
		})
	}
}
