package orchestrator

import (
	"encoding/json"
	"io"
	"log/slog"
	"sort"
	"testing"
	"time"
)

// BenchmarkScheduler measures the orchestrator's own cost per invocation:
// queueing, dispatch, the authenticated protocol round trip over loopback
// TCP, and recording, with warm in-process workers (the real worker runtime)
// running a function that does nothing. Worker-side protocol work runs in
// the same process, so the numbers are an upper bound for the orchestrator.
// Run with -cpu 1 for the one-core figure.
func BenchmarkScheduler(b *testing.B) {
	for _, workers := range []int{4, 16} {
		b.Run(map[int]string{4: "workers=4", 16: "workers=16"}[workers], func(b *testing.B) {
			h := newHarness(b, workers, Config{IdleTimeout: time.Hour, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			h.orch.log = slog.New(slog.NewTextHandler(io.Discard, nil))
			args := json.RawMessage(`{"n":0}`)
			// Warm up: boot every worker once.
			for i := 0; i < workers; i++ {
				inv, _ := h.orch.Submit("float_operations", args, time.Minute)
				<-inv.Done()
			}
			lat := make([]time.Duration, 0, b.N)
			inflight := make(chan struct{}, 2*workers)
			results := make(chan time.Duration, 2*workers)
			done := make(chan struct{})
			go func() {
				for d := range results {
					lat = append(lat, d)
				}
				close(done)
			}()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				inflight <- struct{}{}
				t0 := time.Now()
				inv, err := h.orch.Submit("float_operations", args, time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					<-inv.Done()
					if inv.Err != "" {
						b.Error(inv.Err)
					}
					results <- time.Since(t0)
					<-inflight
				}()
			}
			for i := 0; i < cap(inflight); i++ {
				inflight <- struct{}{}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			close(results)
			<-done
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) }
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "inv/s")
			b.ReportMetric(p(0.50), "p50-µs")
			b.ReportMetric(p(0.99), "p99-µs")
		})
	}
}

// BenchmarkSchedulerLatency measures one invocation at a time on a warm
// worker: the orchestrator's overhead an unloaded caller sees.
func BenchmarkSchedulerLatency(b *testing.B) {
	h := newHarness(b, 1, Config{IdleTimeout: time.Hour})
	h.orch.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	args := json.RawMessage(`{"n":0}`)
	inv, _ := h.orch.Submit("float_operations", args, time.Minute)
	<-inv.Done()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		inv, err := h.orch.Submit("float_operations", args, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		<-inv.Done()
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(p(0.50), "p50-µs")
	b.ReportMetric(p(0.99), "p99-µs")
}
