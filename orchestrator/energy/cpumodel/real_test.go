package cpumodel_test

import (
	"context"
	"errors"
	"math"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/cpumodel"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// TestModelOfRealProcesses models two real processes standing in for QEMU
// workers, one spinning and one asleep, through the real /proc for one
// second, and attributes the result.
func TestModelOfRealProcesses(t *testing.T) {
	spin := exec.Command("sh", "-c", "while :; do :; done")
	sleep := exec.Command("sleep", "30")
	for _, c := range []*exec.Cmd{spin, sleep} {
		if err := c.Start(); err != nil {
			t.Skipf("cannot start %v: %v", c.Args, err)
		}
		c := c
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	pids := map[string]int{"vm0": spin.Process.Pid, "vm1": sleep.Process.Pid}
	before, err := cpumodel.CPUTicks("/proc", spin.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	const perCore, idle = 10.0, 30.0
	m := &cpumodel.Meter{Workers: []string{"vm0", "vm1"}, PIDs: func() map[string]int { return pids },
		IdleWatts: idle, WattsPerCore: perCore, Interval: 100 * time.Millisecond}
	var mu sync.Mutex
	var samples []energy.Sample
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := m.Run(ctx, func(s energy.Sample) { mu.Lock(); samples = append(samples, s); mu.Unlock() }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	after, _ := cpumodel.CPUTicks("/proc", spin.Process.Pid)
	end := time.Now()
	ivs := []energy.Interval{
		{Worker: "vm0", State: state.Working, Start: start, End: end, Invocation: "spin"},
		{Worker: "vm1", State: state.Idle, Start: start, End: end},
	}
	res, err := energy.Attribute(energy.Input{Samples: samples, Intervals: ivs})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Summary())
	if energy.Label(res.Source) != "model" {
		t.Errorf("source %q not labelled model", res.Source)
	}
	// The spinning process's joules are watts per core times the CPU
	// seconds it used while sampled: no more than /proc says it used over
	// the whole test, and something (it spins, even on a loaded host).
	spinJ := res.Invocations["spin"].TotalJ()
	cpuSec := float64(after-before) / 100
	if spinJ <= 0.05*perCore || spinJ > perCore*cpuSec+1e-9 {
		t.Errorf("spinning worker %.3f J; it used %.2f CPU s (at most %.3f J)", spinJ, cpuSec, perCore*cpuSec)
	}
	if j := res.Workers["vm1"][state.Idle]; j > 0.02*perCore {
		t.Errorf("sleeping worker modelled at %.3f J", j)
	}
	var inv float64
	for _, e := range res.Invocations {
		inv += e.TotalJ()
	}
	if got := inv + res.Unattributed.TotalJ(); math.Abs(got-res.TotalJ) > 0.01*res.TotalJ {
		t.Errorf("parts %.3f J, host total %.3f J", got, res.TotalJ)
	}
	// The host's baseline is the idle power over the window.
	if math.Abs(res.Unattributed.BaselineJ-idle*res.End.Sub(res.Start).Seconds()) > 0.01*res.TotalJ+res.Workers["vm1"][state.Idle] {
		t.Errorf("baseline %.3f J, idle power over %v is %.3f J", res.Unattributed.BaselineJ, res.End.Sub(res.Start), idle*res.End.Sub(res.Start).Seconds())
	}
}
