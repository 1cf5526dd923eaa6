package cpumodel_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/cpumodel"
)

// stat writes a /proc/PID/stat with the given utime and stime, and a
// command name with a space and a parenthesis, as QEMU's can have.
func stat(t *testing.T, root string, pid int, utime, stime int64) {
	t.Helper()
	line := fmt.Sprintf("%d (qemu-system-x86 (vm0)) S 1 %d %d 0 -1 4194560 1234 0 0 0 %d %d 0 0 20 0 3 0 12345 1000000 500 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n",
		pid, pid, pid, utime, stime)
	if err := os.MkdirAll(filepath.Join(root, fmt.Sprint(pid)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, fmt.Sprint(pid), "stat"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCPUTicks(t *testing.T) {
	root := t.TempDir()
	stat(t, root, 42, 300, 45)
	if got, err := cpumodel.CPUTicks(root, 42); err != nil || got != 345 {
		t.Errorf("CPUTicks = %d %v, want 345", got, err)
	}
	os.WriteFile(filepath.Join(root, "42", "stat"), []byte("42 (qemu) S 1 2\n"), 0o644)
	if _, err := cpumodel.CPUTicks(root, 42); !errors.Is(err, cpumodel.ErrBadStat) {
		t.Errorf("short stat: err %v, want ErrBadStat", err)
	}
	// Our own process's real stat parses.
	if _, err := cpumodel.CPUTicks("/proc", os.Getpid()); err != nil {
		t.Errorf("own /proc stat: %v", err)
	}
}

func TestMeterModelsPerVMPower(t *testing.T) {
	root := t.TempDir()
	stat(t, root, 100, 1000, 200) // vm0 running before the start
	var mu sync.Mutex
	pids := map[string]int{"vm0": 100}
	clk := clock.NewFake(time.Unix(5000, 0))
	tick := make(chan time.Time)
	out := make(chan energy.Sample, 16)
	m := &cpumodel.Meter{Proc: root, Workers: []string{"vm0", "vm1"}, IdleWatts: 30, WattsPerCore: 10,
		PIDs: func() map[string]int {
			mu.Lock()
			defer mu.Unlock()
			c := map[string]int{}
			for k, v := range pids {
				c[k] = v
			}
			return c
		},
		Clock: clk, Tick: tick}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, func(s energy.Sample) { out <- s }) }()
	for _, want := range []energy.Sample{{Worker: "vm0"}, {Worker: "vm1"}, {Watts: 30}} {
		if s := <-out; s.Worker != want.Worker || s.Watts != want.Watts || !energy.IsModel(s.Source) {
			t.Errorf("start sample %+v, want %+v", s, want)
		}
	}
	// In 2 s: vm0 used 300 ticks (3 s of CPU: 1.5 cores); vm1 started and
	// used 100 ticks (0.5 core).
	stat(t, root, 100, 1250, 250)
	stat(t, root, 200, 80, 20)
	mu.Lock()
	pids["vm1"] = 200
	mu.Unlock()
	clk.Advance(2 * time.Second)
	tick <- time.Time{}
	want := map[string]float64{"vm0": 15, "vm1": 5, "": 50}
	for i := 0; i < 3; i++ {
		s := <-out
		if math.Abs(s.Watts-want[s.Worker]) > 1e-9 || s.Source != cpumodel.Source {
			t.Errorf("sample %+v, want %v W", s, want[s.Worker])
		}
	}
	// vm0 stops (process gone), vm1 idle.
	mu.Lock()
	delete(pids, "vm0")
	mu.Unlock()
	clk.Advance(2 * time.Second)
	tick <- time.Time{}
	want = map[string]float64{"vm0": 0, "vm1": 0, "": 30}
	for i := 0; i < 3; i++ {
		if s := <-out; math.Abs(s.Watts-want[s.Worker]) > 1e-9 {
			t.Errorf("sample %+v, want %v W", s, want[s.Worker])
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
}

// BenchmarkCPUTicks is the cost per VM per sample of the CPU-time model:
// reading and parsing one real /proc/PID/stat.
func BenchmarkCPUTicks(b *testing.B) {
	pid := os.Getpid()
	for i := 0; i < b.N; i++ {
		if _, err := cpumodel.CPUTicks("/proc", pid); err != nil {
			b.Fatal(err)
		}
	}
}
