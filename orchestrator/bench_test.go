package orchestrator

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

// BenchmarkScheduler measures the orchestrator's own cost per invocation:
// queueing, dispatch, the authenticated protocol round trip over loopback
// TCP, and recording, with warm in-process workers (the real worker runtime)
// running a function that does nothing. Concurrent clients each submit an
// invocation and wait for it, in a loop (a closed loop, like HTTP clients).
// The store cases persist every invocation in a BoltStore on disk: nothing
// is acknowledged before it is committed (see kind below). Worker-side protocol work runs in
// the same process, so the numbers are an upper bound for the orchestrator.
// Run with -cpu 1 for the one-core figure.
func BenchmarkScheduler(b *testing.B) {
	// kind: memory (no store), store (the BoltStore: its write-ahead log,
	// synced through io_uring), store-fdatasync (the log synced by a
	// plain fdatasync), bolt-only (each group committed straight into
	// bbolt, as before the log).
	cases := []struct {
		workers, clients int
		kind             string
	}{
		{4, 8, "memory"}, {16, 32, "memory"}, {4, 64, "memory"}, {4, 256, "memory"}, {4, 1024, "memory"},
		{4, 8, "store"}, {4, 64, "store"}, {4, 256, "store"}, {4, 1024, "store"},
		{4, 64, "store-fdatasync"}, {4, 256, "store-fdatasync"}, {4, 1024, "store-fdatasync"},
		{4, 64, "bolt-only"}, {4, 256, "bolt-only"}, {4, 1024, "bolt-only"},
	}
	for _, c := range cases {
		name := fmt.Sprintf("workers=%d/clients=%d/%s", c.workers, c.clients, c.kind)
		b.Run(name, func(b *testing.B) {
			var counted *countingStore
			// Every client may have one invocation waiting.
			cfg := Config{IdleTimeout: time.Hour, MaxQueue: 2 * c.clients}
			if c.kind != "memory" {
				opts := BoltOptions{NoLog: c.kind == "bolt-only", PlainSync: c.kind == "store-fdatasync"}
				s, err := OpenBoltStore(filepath.Join(b.TempDir(), "queue.db"), opts)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { s.Close() })
				counted = &countingStore{Store: s}
				cfg.Store = counted
			}
			h := newHarness(b, c.workers, cfg)
			h.orch.log = slog.New(slog.NewTextHandler(io.Discard, nil))
			args := json.RawMessage(`{"n":0}`)
			// Warm up: boot every worker once.
			var warm []*Invocation
			for i := 0; i < c.workers; i++ {
				inv, err := h.orch.Submit("float_operations", args, time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				warm = append(warm, inv)
			}
			for _, inv := range warm {
				<-inv.Done()
			}
			if counted != nil {
				counted.reset() // not the warm-up's commits
			}
			lat := make([]time.Duration, b.N)
			var next int64
			var mu sync.Mutex
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for cl := 0; cl < c.clients; cl++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						mu.Lock()
						i := next
						next++
						mu.Unlock()
						if i >= int64(b.N) {
							return
						}
						t0 := time.Now()
						inv, err := h.orch.Submit("float_operations", args, time.Minute)
						if err != nil {
							b.Error(err)
							return
						}
						<-inv.Done()
						if inv.Err != nil {
							b.Error(inv.Err)
						}
						lat[i] = time.Since(t0)
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) }
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "inv/s")
			b.ReportMetric(p(0.50), "p50-µs")
			b.ReportMetric(p(0.99), "p99-µs")
			if counted != nil {
				commits, writes, in := counted.counts()
				b.ReportMetric(float64(writes)/float64(max(commits, 1)), "writes/commit")
				b.ReportMetric(float64(commits)/elapsed.Seconds(), "commits/s")
				b.ReportMetric(in.Seconds()/elapsed.Seconds(), "commit-share")

			}
		})
	}
}

// countingStore counts a Store's commits, the writes they carry (how well
// group commit batches) and the wall time spent in them (commit-share: of
// the run; with one P nothing else runs during a commit's fsyncs).
type countingStore struct {
	Store
	mu              sync.Mutex
	commits, writes int
	in              time.Duration
}

func (s *countingStore) Commit(w []StoreWrite) error {
	t0 := time.Now()
	err := s.Store.Commit(w)
	d := time.Since(t0)
	s.mu.Lock()
	s.commits++
	s.writes += len(w)
	s.in += d
	s.mu.Unlock()
	return err
}

func (s *countingStore) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commits, s.writes, s.in = 0, 0, 0
}

func (s *countingStore) counts() (commits, writes int, in time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits, s.writes, s.in
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
