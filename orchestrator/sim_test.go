package orchestrator

import (
	"errors"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/simworker"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/protocol"
)

// NewSim's machine has the configuration New gives the same Config: the
// simulator runs the scheduler mforch serve runs, defaults included.
func TestSimConfigAsNew(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{IdleTimeout: 30 * time.Second, MaxBooting: 1, JobTimeout: time.Minute, PowerOffHoldoff: time.Second,
			Policy: map[string]cluster.Policy{cluster.KindVM: {Name: cluster.PolicyWarmPool, Pool: 2}}},
	} {
		cfg.Cluster = cluster.Local(3)
		cfg.Controllers = map[string]power.Controller{cluster.KindVM: &simworker.Controller{}}
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		o, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		want := o.m.cfg
		o.Close()
		s, err := NewSim(cfg, map[string]bool{cluster.KindVM: true}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(s.m.cfg, want) {
			t.Errorf("NewSim's machine config\n%+v\nNew's\n%+v", s.m.cfg, want)
		}
	}
	if _, err := NewSim(Config{Cluster: cluster.Local(1), Policy: map[string]cluster.Policy{cluster.KindVM: {Name: "nap"}}}, nil, time.Now()); !errors.Is(err, cluster.ErrPolicy) {
		t.Errorf("bad policy: err %v, want ErrPolicy", err)
	}
}

// One invocation through Sim: submit powers a worker on, the hello gets
// the job, the result stops it, its exit records the row; the actions name
// the worker and session each event must carry.
func TestSimCycle(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := NewSim(Config{Cluster: cluster.Local(1)}, map[string]bool{cluster.KindVM: true}, t0)
	if err != nil {
		t.Fatal(err)
	}
	kinds := func(acts []SimAction) map[SimKind]SimAction {
		m := map[SimKind]SimAction{}
		for _, a := range acts {
			m[a.Kind] = a
		}
		return m
	}
	inv := &Invocation{ID: "i1", Function: "f", Timeout: time.Minute, Queued: t0}
	acts, err := s.Submit(inv, t0)
	if err != nil {
		t.Fatal(err)
	}
	on, ok := kinds(acts)[SimPowerOn]
	if !ok || on.Worker != "vm0" {
		t.Fatalf("submit: no power-on of vm0: %+v", acts)
	}
	s.PoweredOn("vm0", on.Session, nil, t0)
	acts, accepted := s.Hello("vm0", protocol.BootTimes{ConnectedMS: 1000}, t0.Add(time.Second))
	job, ok := kinds(acts)[SimJob]
	if !accepted || !ok || job.Inv != inv || job.Session != on.Session {
		t.Fatalf("hello: accepted %v, job %+v", accepted, acts)
	}
	acts = s.Result("vm0", job.Session, protocol.Result{ID: "i1", ExecMS: 5}, t0.Add(1100*time.Millisecond))
	k := kinds(acts)
	if k[SimCommand].Command != protocol.CmdPowerOff || k[SimDone].Inv != inv {
		t.Fatalf("result: want power-off and done: %+v", acts)
	}
	if _, ok := k[SimRecord]; ok {
		t.Fatal("recorded before the worker is off")
	}
	acts = s.Exited("vm0", t0.Add(1200*time.Millisecond))
	k = kinds(acts)
	if k[SimRecord].Inv != inv || inv.PoweredOff.IsZero() || inv.Err != nil {
		t.Fatalf("exit: want the row recorded: %+v, inv %+v", acts, inv)
	}
	if st, _ := s.State("vm0"); st != state.Off {
		t.Fatalf("vm0 is %s", st)
	}
	// A second hello of a worker that is off is turned away.
	if _, ok := s.Hello("vm0", protocol.BootTimes{}, t0.Add(2*time.Second)); ok {
		t.Error("hello of an off worker accepted")
	}
}
