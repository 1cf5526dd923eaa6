package energy_test

import (
	"context"
	"math"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// bench is a strip with one board under test, a fake clock and a fake
// meter that samples every 100 ms of fake time.
type bench struct {
	clk   *clock.Fake
	mu    sync.Mutex
	state state.Name // of the board
	emit  func(energy.Sample)
	ready chan struct{}
}

func (b *bench) Run(ctx context.Context, emit func(energy.Sample)) error {
	b.mu.Lock()
	b.emit = emit
	b.mu.Unlock()
	emit(energy.Sample{At: b.clk.Now(), Watts: bbb.base})
	close(b.ready)
	<-ctx.Done()
	return ctx.Err()
}
func (b *bench) Source() string { return "measured:fake" }

func (b *bench) sleep(ctx context.Context, d time.Duration) error {
	<-b.ready
	for step := 100 * time.Millisecond; d > 0; d -= step {
		b.clk.Advance(step)
		b.mu.Lock()
		s := energy.Sample{At: b.clk.Now(), Watts: bbb.base + bbb.watts[b.state]}
		b.mu.Unlock()
		b.emit(s)
	}
	return nil
}

func (b *bench) set(s state.Name) error { b.mu.Lock(); b.state = s; b.mu.Unlock(); return nil }

type benchControl struct{ b *bench }

func (c benchControl) AllOff(context.Context) error  { return c.b.set(state.Off) }
func (c benchControl) PowerOn(context.Context) error { return c.b.set(state.Booting) }
func (c benchControl) WaitBooted(ctx context.Context) error {
	c.b.sleep(ctx, 2500*time.Millisecond)
	return c.b.set(state.Idle)
}
func (c benchControl) StartBusy(context.Context) error { return c.b.set(state.Working) }
func (c benchControl) StopBusy(context.Context) error  { return c.b.set(state.Idle) }
func (c benchControl) PowerOff(context.Context) error  { return c.b.set(state.Stopping) }
func (c benchControl) WaitOff(ctx context.Context) error {
	c.b.sleep(ctx, 1200*time.Millisecond)
	return c.b.set(state.Off)
}

func TestCalibrationRecoversPerStatePower(t *testing.T) {
	b := &bench{clk: clock.NewFake(t0), ready: make(chan struct{})}
	cal := &energy.Calibration{Meter: b, Control: benchControl{b}, Hold: 5 * time.Second, Settle: time.Second,
		Cycles: 2, Clock: b.clk, Sleep: b.sleep}
	m, phases, err := cal.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(phases) != 7 { // baseline, 2 boots, idle, working, 2 shutdowns
		t.Errorf("%d phases: %+v", len(phases), phases)
	}
	if math.Abs(m.BaselineWatts-bbb.base) > 1e-9 || m.Source != "calibration" {
		t.Errorf("baseline %v (%s), want %v from calibration", m.BaselineWatts, m.Source, bbb.base)
	}
	for _, s := range state.On {
		if math.Abs(m.Watts[s]-bbb.watts[s]) > 1e-9 {
			t.Errorf("%s: %v W, want %v", s, m.Watts[s], bbb.watts[s])
		}
	}
	path := filepath.Join(t.TempDir(), "states.yaml")
	if err := energy.WriteModel(path, m); err != nil {
		t.Fatal(err)
	}
	back, err := energy.LoadModel(path)
	if err != nil || back.BaselineWatts != m.BaselineWatts || back.Watts[state.Working] != m.Watts[state.Working] {
		t.Errorf("model did not survive the file: %+v %v", back, err)
	}
}
