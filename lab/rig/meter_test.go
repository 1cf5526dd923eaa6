package rig

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/cpumodel"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/state"
)

func TestSetupMeterPicksMeter(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	q := &power.QEMU{}
	on := func(cl *cluster.Cluster) Config {
		return Config{Cluster: cl, Log: log, Energy: &Energy{Model: energy.CPUModel{WattsPerCore: 10}}}
	}

	// QEMU workers, no meter section: the CPU-time model, labelled model.
	r, err := setupMeter(on(cluster.Local(2)), q)
	if err != nil || r == nil || r.cfg.Driver != energy.DriverCPUTime || energy.Label(r.meter.Source()) != "model" {
		t.Fatalf("local cluster: %+v, %v; want the cpu-time model", r, err)
	}
	// It reads at every state change as well as every interval, and the
	// caller's observer sees every change after it.
	if cm := r.meter.(*cpumodel.Meter); cm.Tick == nil || r.tick == nil {
		t.Fatal("the cpu-time model is not driven by the meter run's ticks")
	}
	var seen []state.Name
	observe := r.observer(func(c state.Change) { seen = append(seen, c.To) })
	observe(state.Change{Worker: "vm0", To: state.Stopping, At: time.Now()})
	observe(state.Change{Worker: "vm0", To: state.Off, At: time.Now()}) // no second reading: one pending is enough
	if len(r.tick) != 1 {
		t.Errorf("%d readings pending after two state changes, want 1", len(r.tick))
	}
	if len(seen) != 2 {
		t.Errorf("the caller's observer saw %v, want both changes", seen)
	}
	// A bad model is refused.
	bad := on(cluster.Local(1))
	bad.Energy.Model.WattsPerCore = 0
	if _, err := setupMeter(bad, q); !errors.Is(err, energy.ErrConfig) {
		t.Errorf("watts per core 0: err = %v, want energy.ErrConfig", err)
	}
	// The cluster file's meter wins over the model, with its calibrated states.
	dir := t.TempDir()
	states := filepath.Join(dir, "states.yaml")
	os.WriteFile(states, []byte("source: calibration\nbaseline_watts: 11.5\nwatts: {booting: 2.3, idle: 1.5, working: 2.9, stopping: 1.8}\n"), 0o644)
	cl := cluster.Local(1)
	cl.Meter = &energy.Config{Driver: energy.DriverWattsUp, Device: "/dev/ttyUSB0", Covers: "strip", States: states}
	r, err = setupMeter(on(cl), q)
	if err != nil || r == nil || r.cfg.Driver != energy.DriverWattsUp || r.acc.Model == nil || r.acc.Model.Watts[state.Working] != 2.9 {
		t.Fatalf("meter section: %+v, %v", r, err)
	}
	// An experiment's meter wins over the cluster's.
	withMeter := on(cl)
	withMeter.Energy.Meter = &energy.Config{Driver: energy.DriverCPUTime, Model: &energy.CPUModel{WattsPerCore: 9.5}}
	if r, err = setupMeter(withMeter, q); err != nil || r == nil || r.cfg.Driver != energy.DriverCPUTime {
		t.Fatalf("Energy.Meter over the cluster's: %+v, %v; want cpu-time", r, err)
	}
	// BeagleBones without a meter, or energy off: no accounting.
	cl = cluster.Local(1)
	cl.Workers[0].Kind = cluster.KindBBB
	if r, err := setupMeter(on(cl), nil); r != nil || err != nil {
		t.Errorf("boards without a meter: %+v, %v; want none", r, err)
	}
	off := on(cluster.Local(1))
	off.Energy = nil
	if r, err := setupMeter(off, q); r != nil || err != nil {
		t.Errorf("energy off: %+v, %v; want none", r, err)
	}
}
