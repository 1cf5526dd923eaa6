package orchestrator_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/cpumodel"
	"github.com/microfaas/microfaas/orchestrator/energy/wattsup"
	"github.com/microfaas/microfaas/orchestrator/energy/wattsup/wattsupsim"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// liveSchedule is the power a strip of boards draws, built from the
// orchestrator's live worker timeline: a baseline plus, for each worker, the
// power of the state it is in.
type liveSchedule struct {
	base  float64
	watts map[state.Name]float64 // per board, by state (off: 0)

	mu      sync.Mutex
	changes map[string][]state.Change // per worker, in order
}

func (s *liveSchedule) observe(c state.Change) {
	s.mu.Lock()
	s.changes[c.Worker] = append(s.changes[c.Worker], c)
	s.mu.Unlock()
}

// Power is the schedule at t.
func (s *liveSchedule) Power(t time.Time) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.base
	for _, cs := range s.changes {
		i := sort.Search(len(cs), func(i int) bool { return cs[i].At.After(t) })
		if i > 0 {
			p += s.watts[cs[i-1].To]
		}
	}
	return p
}

// joules integrates the schedule over [a, b) in 1 ms steps.
func (s *liveSchedule) joules(a, b time.Time) float64 {
	var j float64
	for t := a; t.Before(b); t = t.Add(time.Millisecond) {
		step := min(time.Millisecond, b.Sub(t))
		j += s.Power(t.Add(step/2)) * step.Seconds()
	}
	return j
}

// TestQEMUEnergyEndToEnd: three QEMU workers run a handful of invocations
// while a WattsUp simulator on a pty reports the power of a known schedule
// driven by the live worker timeline, read by the real driver into the
// orchestrator's energy accounting; the CPU-time model of the same VMs runs
// alongside. The rows' joules plus the unattributed part must add up to the
// meter's total, the meter's total must match the schedule, and the
// per-state power fitted from the run must match the schedule's.
func TestQEMUEnergyEndToEnd(t *testing.T) {
	qemuWorker(t) // skips with -short
	sched := &liveSchedule{base: 11.5, watts: map[state.Name]float64{state.Booting: 3, state.Idle: 1.5, state.Working: 5, state.Stopping: 2},
		changes: map[string][]state.Change{}}
	sim, err := wattsupsim.Start(wattsupsim.Options{Power: sched.Power, Link: filepath.Join(t.TempDir(), "ttyWattsUp"),
		Second: 250 * time.Millisecond, Noise: wattsupsim.Noise{Seed: 7, Garbage: 0.1, Split: 0.1}})
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer sim.Close()

	strip := &energy.Accountant{} // the WattsUp: per-state power fitted from the run
	model := &energy.Accountant{} // the CPU-time model of the same VMs
	var results bytes.Buffer
	rec, err := orchestrator.NewEnergyCSVRecorder(&results, true)
	if err != nil {
		t.Fatal(err)
	}
	c := startQEMUCluster(t, 3, orchestrator.Config{Energy: strip, Recorder: rec, IdleTimeout: 1500 * time.Millisecond,
		EnergyEvery: time.Second, OnStateChange: func(sc state.Change) {
			sched.observe(sc)
			model.Observe(sc)
		}})
	var ids []string
	for _, w := range c.Cluster.Workers {
		ids = append(ids, w.ID)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var meters sync.WaitGroup
	meters.Add(2)
	wu := &wattsup.Meter{Device: sim.Path(), Interval: time.Second}
	go func() { defer meters.Done(); wu.Run(ctx, strip.Add) }()
	cm := &cpumodel.Meter{Workers: ids, PIDs: c.QEMU.PIDs, IdleWatts: 20, WattsPerCore: 10, Interval: 250 * time.Millisecond}
	go func() { defer meters.Done(); cm.Run(ctx, model.Add) }()
	defer func() { cancel(); meters.Wait() }()
	time.Sleep(time.Second) // baseline: every board off

	// Waves of different sizes, so the number of boards in each state
	// varies (which is what lets the fit tell the states apart).
	deadline := time.Now().Add(4 * time.Minute)
	var invs []*orchestrator.Invocation
	for wave, n := range []int{3, 1, 2} {
		var batch []*orchestrator.Invocation
		for i := 0; i < n; i++ {
			inv, err := c.Orch.Submit("cascading_sha256", json.RawMessage(fmt.Sprintf(`{"data":"energy-%d-%d","rounds":%d}`, wave, i, 20000*(i+1))), time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			batch = append(batch, inv)
		}
		for _, inv := range batch {
			select {
			case <-inv.Done():
			case <-time.After(time.Until(deadline)):
				t.Fatalf("invocation did not finish in time: %+v", c.Orch.Status())
			}
			if inv.Err != nil {
				t.Fatalf("invocation failed: %v", inv.Err)
			}
		}
		invs = append(invs, batch...)
		// Let the workers idle out and power off, then stay off a while.
		waitFor(t, time.Until(deadline), func() bool {
			for _, w := range c.Orch.Status().Workers {
				if w.State != state.Off {
					return false
				}
			}
			return true
		})
		time.Sleep(time.Second)
	}
	c.Orch.Shutdown(context.Background()) // waits for the meter to pass the last power-off
	cancel()
	meters.Wait()

	// 1. Every invocation's row has its measured energy, and the rows plus
	// the unattributed part add up to the meter's total.
	res := c.Orch.EnergyResult()
	if res == nil {
		t.Fatal("no energy result")
	}
	t.Log(res.Summary())
	recs, err := csv.NewReader(&results).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(invs)+1 {
		t.Fatalf("%d result rows, want %d", len(recs)-1, len(invs))
	}
	col := map[string]int{}
	for i, name := range recs[0] {
		col[name] = i
	}
	var rows float64
	for _, r := range recs[1:] {
		j, err := strconv.ParseFloat(r[col["energy_j"]], 64)
		if err != nil || j <= 0 || r[col["energy_source"]] != wattsup.Source {
			t.Errorf("row %v: no measured energy", r)
		}
		rows += j
		// The row was written once its energy was final: a later
		// attribution (a refit on more data) changes it only slightly.
		if e := res.Invocations[r[col["invocation"]]]; e == nil || math.Abs(e.TotalJ()-j) > 0.02*j {
			t.Errorf("row %s: %.3f J, the final attribution says %+v", r[col["invocation"]], j, e)
		}
	}
	total := rows + res.Unattributed.TotalJ()
	t.Logf("rows %.2f J + unattributed %.2f J = %.2f J; meter %.2f J over %v", rows, res.Unattributed.TotalJ(), total, res.TotalJ, res.End.Sub(res.Start).Round(time.Millisecond))
	if math.Abs(total-res.TotalJ) > 0.01*res.TotalJ {
		t.Errorf("rows + unattributed = %.2f J, meter total %.2f J: more than 1%% apart", total, res.TotalJ)
	}

	// 2. The meter's total is the schedule's energy over the same window.
	truth := sched.joules(res.Start, res.End)
	t.Logf("schedule %.2f J, meter %.2f J (%+.2f%%), %d packets, %d dropped", truth, res.TotalJ, 100*(res.TotalJ-truth)/truth, len(sim.Packets()), wu.Dropped)
	if math.Abs(res.TotalJ-truth) > 0.01*truth {
		t.Errorf("meter total %.2f J, schedule %.2f J: more than 1%% apart", res.TotalJ, truth)
	}

	// 3. The fitted per-state power is the schedule's. States a board
	// spent little time in are fitted from few samples: the bound is
	// looser the less time there is: ±5%, or ±0.25 W·s / board-seconds
	// (stopping lasts a few tens of ms per power-off here).
	boardSec := map[state.Name]float64{}
	for _, iv := range strip.Intervals(res.End) {
		boardSec[iv.State] += iv.End.Sub(iv.Start).Seconds()
	}
	if res.Fit == nil {
		t.Fatal("no fit")
	}
	f := res.Fit.Model
	t.Logf("fit: baseline %.3f W (schedule %.1f); board-seconds per state %v", f.BaselineWatts, sched.base, boardSec)
	if math.Abs(f.BaselineWatts-sched.base) > 0.02*sched.base {
		t.Errorf("fitted baseline %.3f W, schedule %.1f W", f.BaselineWatts, sched.base)
	}
	for _, st := range state.On {
		want, got := sched.watts[st], f.Watts[st]
		tol := max(0.05*want, 0.25/boardSec[st])
		t.Logf("  %-8s fit %.3f W, schedule %.1f W (%+.1f%%), %.1f board-s, tolerance ±%.2f W", st, got, want, 100*(got-want)/want, boardSec[st], tol)
		if math.Abs(got-want) > tol {
			t.Errorf("fitted %s power %.3f W, schedule %.1f W", st, got, want)
		}
	}

	// 4. The CPU-time model of the same run: a model, and it adds up too.
	mres, err := model.Result(res.End)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(mres.Summary())
	var minv float64
	for _, inv := range invs {
		e := mres.Invocations[inv.ID]
		if e == nil || e.TotalJ() <= 0 {
			t.Errorf("CPU-time model: invocation %s has no energy: %+v", inv.ID, e)
			continue
		}
		minv += e.TotalJ()
	}
	if energy.Label(mres.Source) != "model" {
		t.Errorf("CPU-time source %q is not labelled model", mres.Source)
	}
	if got := minv + mres.Unattributed.TotalJ(); math.Abs(got-mres.TotalJ) > 0.01*mres.TotalJ {
		t.Errorf("model: invocations %.2f J + unattributed %.2f J != total %.2f J", minv, mres.Unattributed.TotalJ(), mres.TotalJ)
	}
}
