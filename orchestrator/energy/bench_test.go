package energy_test

import (
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/energy"
)

// BenchmarkAccountantAdd is the orchestrator's cost of keeping one sample.
func BenchmarkAccountantAdd(b *testing.B) {
	var a energy.Accountant
	s := energy.Sample{At: t0, Watts: 12.3, Source: "measured:wattsup"}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		a.Add(s)
	}
}

// BenchmarkAttributeHour is attributing one hour of 1 Hz strip samples for
// ten power-cycling boards (fit included): the cost of a results update.
func BenchmarkAttributeHour(b *testing.B) {
	ivs := synthTimeline(1, 10, t0, time.Hour, 1)
	samples := bbb.stripSamples(ivs, t0, time.Hour, time.Second)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := energy.Attribute(energy.Input{Samples: samples, Intervals: ivs}); err != nil {
			b.Fatal(err)
		}
	}
}
