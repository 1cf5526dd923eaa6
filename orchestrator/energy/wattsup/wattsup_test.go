package wattsup_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/wattsup"
	"github.com/microfaas/microfaas/orchestrator/energy/wattsup/wattsupsim"
)

// steps is a schedule that changes every 130 ms between a few levels.
func steps(t0 time.Time) func(time.Time) float64 {
	levels := []float64{12.3, 14.6, 19.9, 15.2, 13.1}
	return func(t time.Time) float64 {
		return levels[int(t.Sub(t0)/(130*time.Millisecond))%len(levels)]
	}
}

type collect struct {
	mu sync.Mutex
	s  []energy.Sample
}

func (c *collect) add(s energy.Sample) { c.mu.Lock(); c.s = append(c.s, s); c.mu.Unlock() }
func (c *collect) get() []energy.Sample {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]energy.Sample(nil), c.s...)
}

// waitFor polls cond for up to 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestOpenSerialSetsRaw115200_8N1(t *testing.T) {
	m, slave, err := wattsupsim.OpenPTY()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer m.Close()
	f, err := wattsup.OpenSerial(slave)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Cflag&unix.CBAUD != unix.B115200 || tio.Cflag&unix.CSIZE != unix.CS8 || tio.Cflag&(unix.PARENB|unix.CSTOPB|unix.CRTSCTS) != 0 {
		t.Errorf("cflag %#o: want 115200 8N1 without flow control", tio.Cflag)
	}
	if tio.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 || tio.Oflag&unix.OPOST != 0 || tio.Iflag&(unix.ICRNL|unix.IXON) != 0 {
		t.Errorf("not raw: lflag %#o oflag %#o iflag %#o", tio.Lflag, tio.Oflag, tio.Iflag)
	}
	if _, err := wattsup.OpenSerial(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, unix.ENOENT) {
		t.Errorf("missing device: err %v, want ENOENT", err)
	}
}

func TestMeterReadsSimulatorThroughNoise(t *testing.T) {
	t0 := time.Now()
	sim, err := wattsupsim.Start(wattsupsim.Options{
		Power: steps(t0), Link: filepath.Join(t.TempDir(), "ttyWattsUp"), Second: 20 * time.Millisecond,
		Noise: wattsupsim.Noise{Seed: 1, Garbage: 0.3, Split: 0.3, Truncate: 0.1},
	})
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer sim.Close()
	m := &wattsup.Meter{Device: sim.Path(), Interval: time.Second, Stall: time.Second}
	var c collect
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, c.add) }()
	waitFor(t, "60 packets", func() bool { return len(sim.Packets()) >= 60 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	cmds := sim.Commands()
	if len(cmds) < 3 || cmds[0] != "#R,W,0;" || cmds[1] != "#H,R,0;" || cmds[2] != "#L,W,3,E,,1;" {
		t.Errorf("commands %q: want reset, header request, external logging every 1s", cmds)
	}
	// Every intact packet arrives, in order, with its value; no cut-short
	// packet turns into a sample.
	var want []float64
	cut := 0
	for _, p := range sim.Packets() {
		if p.Intact {
			want = append(want, p.Watts)
		} else {
			cut++
		}
	}
	got := c.get()
	if cut == 0 {
		t.Fatal("the noise cut no packet short: the test proves nothing")
	}
	// The last packet may still be in flight when Run was cancelled.
	if len(got) < len(want)-1 || len(got) > len(want) {
		t.Fatalf("%d samples, %d intact packets sent", len(got), len(want))
	}
	for i := range got {
		if got[i].Watts != want[i] || got[i].Source != wattsup.Source {
			t.Fatalf("sample %d = %v W (%s), sent %v W", i, got[i].Watts, got[i].Source, want[i])
		}
	}
	if m.Dropped < cut {
		t.Errorf("dropped %d, but %d packets were cut short", m.Dropped, cut)
	}
}

func TestMeterReconnectsAfterUnplug(t *testing.T) {
	t0 := time.Now()
	sim, err := wattsupsim.Start(wattsupsim.Options{Power: steps(t0), Link: filepath.Join(t.TempDir(), "ttyWattsUp"), Second: 20 * time.Millisecond})
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer sim.Close()
	m := &wattsup.Meter{Device: sim.Path(), Retry: 30 * time.Millisecond, Stall: time.Second}
	var c collect
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, c.add) }()
	waitFor(t, "samples before unplug", func() bool { return len(c.get()) >= 5 })
	sim.Unplug()
	time.Sleep(100 * time.Millisecond) // the driver fails to reopen a few times
	before := len(c.get())
	if err := sim.Plug(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "samples after replug", func() bool { return len(c.get()) >= before+5 })
	starts := 0
	for _, cmd := range sim.Commands() {
		if cmd == "#L,W,3,E,,1;" {
			starts++
		}
	}
	if starts < 2 {
		t.Errorf("logging started %d times: the driver must restart it after a reconnect", starts)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

func TestMeterReopensAStalledPort(t *testing.T) {
	// A port that never answers: the driver gives up after Stall and
	// reopens it.
	var mu sync.Mutex
	opens := 0
	m := &wattsup.Meter{Device: "pty", Stall: 50 * time.Millisecond, Retry: 10 * time.Millisecond,
		Open: func(string) (wattsup.Port, error) {
			mu.Lock()
			opens++
			mu.Unlock()
			master, slave, err := wattsupsim.OpenPTY()
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { master.Close() })
			return wattsup.OpenSerial(slave)
		}}
	count := func() int { mu.Lock(); defer mu.Unlock(); return opens }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, func(energy.Sample) {}) }()
	waitFor(t, "three opens of a port that never answers", func() bool { return count() >= 3 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

func TestMeterRejectsFractionalInterval(t *testing.T) {
	m := &wattsup.Meter{Device: "x", Interval: 1500 * time.Millisecond}
	if err := m.Run(context.Background(), func(energy.Sample) {}); err == nil {
		t.Error("1.5s interval accepted; the meter logs in whole seconds")
	}
}
