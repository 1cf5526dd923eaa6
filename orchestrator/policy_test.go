package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/protocol"
)

// The power policies (machine.go's afterJob) on the fake clock.

func withPolicy(p cluster.Policy, reportsExit bool) func(*machineConfig) {
	return func(c *machineConfig) {
		c.Policy = map[string]cluster.Policy{cluster.KindVM: p}
		c.ReportsExit[cluster.KindVM] = reportsExit
	}
}

var rebootWhileQueued = cluster.Policy{Name: cluster.PolicyRebootWhileQueued}

// After a job: reboot when work is queued (under reboot-while-queued
// only), power off otherwise. A board's reboot (its controller cannot
// report exits) is booting at once: no holdoff and no power-on.
func TestPolicyAfterJob(t *testing.T) {
	for _, tc := range []struct {
		name        string
		policy      cluster.Policy
		queued      bool
		reportsExit bool
		want        string // command sent after the job
	}{
		{"reboot, work queued, board", rebootWhileQueued, true, false, protocol.CmdReboot},
		{"reboot, work queued, qemu", rebootWhileQueued, true, true, protocol.CmdReboot},
		{"reboot, queue empty", rebootWhileQueued, false, false, protocol.CmdPowerOff},
		{"off, work queued", cluster.Policy{Name: cluster.PolicyOff}, true, false, protocol.CmdPowerOff},
		{"default, work queued", cluster.Policy{}, true, false, protocol.CmdPowerOff},
		{"warm-pool, work queued", cluster.Policy{Name: cluster.PolicyWarmPool, Pool: 1}, true, false, protocol.CmdPowerOff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newMT(t, 1, withPolicy(tc.policy, tc.reportsExit))
			inv := x.submit(time.Minute)
			x.hello("w0")
			x.wantState("w0", state.Working)
			if tc.queued {
				x.submit(time.Minute) // one worker: it waits
			}
			before := x.session("w0")
			x.result("w0", inv, protocol.Result{})
			if !sent(x.acts, tc.want) {
				t.Fatalf("after the job: want %s sent, got %#v", tc.want, x.acts)
			}
			if tc.want == protocol.CmdPowerOff {
				x.wantState("w0", state.Stopping)
				if sent(x.acts, protocol.CmdReboot) {
					t.Fatal("reboot sent as well")
				}
				return
			}
			x.wantState("w0", state.Booting)
			if x.session("w0") == before {
				t.Error("a reboot must start a new session: the old connection's events would still count")
			}
			if has[actPowerOn](x.acts, nil) || has[actPowerOff](x.acts, nil) {
				t.Errorf("a reboot needs no power action: %#v", x.acts)
			}
			if a := x.lastArm("w0"); a.after != x.m.cfg.PowerUpTimeout {
				t.Errorf("timer after the reboot %s, want PowerUpTimeout %s (no holdoff)", a.after, x.m.cfg.PowerUpTimeout)
			}
			if !has[actRecord](x.acts, func(a actRecord) bool { return a.inv == inv && !inv.PoweredOff.IsZero() }) {
				t.Error("the finished job is not recorded at its boot's end")
			}
		})
	}
}

// A rebooting worker's hello is a new session and takes the queued job;
// once the queue is empty it powers off. Its old connection's events are
// stale. A QEMU worker's reboot is qemu exiting on the reset and being
// powered on again at once, in the same session.
func TestPolicyRebootTakesQueuedJob(t *testing.T) {
	for _, reportsExit := range []bool{false, true} {
		x := newMT(t, 1, withPolicy(rebootWhileQueued, reportsExit))
		first := x.submit(time.Minute)
		old := x.hello("w0")
		second := x.submit(time.Minute)
		x.result("w0", first, protocol.Result{})
		x.wantState("w0", state.Booting)
		session := x.session("w0")
		x.ev(0, evConnLost{"w0", session - 1, nil}) // the old connection closing
		x.wantState("w0", state.Booting)
		if reportsExit {
			x.ev(time.Second, evExited{"w0", nil})
			x.wantState("w0", state.Booting)
			if !has[actPowerOn](x.acts, func(a actPowerOn) bool { return a.session == session }) {
				t.Fatalf("qemu's exit on the reset did not power it on again: %#v", x.acts)
			}
			if x.m.workers["w0"].bootFailures != 0 {
				t.Fatal("the reboot's exit counted as a failed boot")
			}
			x.ev(time.Second, evPowerOn{"w0", session, nil})
		}
		c := x.hello("w0")
		if c == old {
			t.Fatal("test bug: same connection")
		}
		if !has[actHelloDone](x.acts, func(a actHelloDone) bool { return a.r.ok && a.r.session == session }) {
			t.Fatalf("hello after the reboot not accepted as session %d: %#v", session, x.acts)
		}
		x.wantState("w0", state.Working)
		if x.m.workers["w0"].current != second || second.Attempts != 1 {
			t.Fatalf("the rebooted worker runs %v, want the queued job", x.m.workers["w0"].current)
		}
		x.result("w0", second, protocol.Result{})
		x.wantState("w0", state.Stopping)
		if !sent(x.acts, protocol.CmdPowerOff) || !isDone(second) || second.Err != nil {
			t.Fatalf("queue empty: want power off, got %#v (err %v)", x.acts, second.Err)
		}
	}
}

// A worker that never says hello after its reboot is declared failed
// after PowerUpTimeout (forced off); the queued job is not lost: it stays
// queued and the worker is powered on afresh for it.
func TestPolicyRebootNeverComesBack(t *testing.T) {
	x := newMT(t, 1, withPolicy(rebootWhileQueued, false))
	first := x.submit(time.Minute)
	x.hello("w0")
	second := x.submit(time.Minute)
	x.result("w0", first, protocol.Result{})
	x.wantState("w0", state.Booting)
	if a := x.lastArm("w0"); a.after != x.m.cfg.PowerUpTimeout {
		t.Fatalf("timer after the reboot %s, want PowerUpTimeout", a.after)
	}
	x.fire("w0")
	x.wantState("w0", state.Stopping)
	if !has[actPowerOff](x.acts, nil) {
		t.Fatalf("silent worker not forced off: %#v", x.acts)
	}
	if x.m.workers["w0"].bootFailures != 1 {
		t.Errorf("boot failures %d, want 1", x.m.workers["w0"].bootFailures)
	}
	x.ev(time.Second, evPowerOff{"w0", x.session("w0"), nil})
	if isDone(second) || len(x.m.queue) != 1 || x.m.queue[0] != second {
		t.Fatalf("the queued job was lost: done %v, queue %v", isDone(second), x.m.queue)
	}
	x.wantState("w0", state.Booting) // powered on again for it
	if !has[actPowerOn](x.acts, nil) {
		t.Fatalf("not powered on for the queued job: %#v", x.acts)
	}
	x.hello("w0")
	x.result("w0", second, protocol.Result{})
	if !isDone(second) || second.Err != nil {
		t.Fatalf("queued job: done %v err %v", isDone(second), second.Err)
	}
}

// warm-pool N keeps N fresh workers (booting or idle, having run nothing)
// within the cluster, and replaces those a job takes.
func TestPolicyWarmPoolFills(t *testing.T) {
	for _, tc := range []struct {
		name          string
		workers, pool int
		wantOn        int
	}{
		{"pool 2 of 3", 3, 2, 2},
		{"pool 1 of 3", 3, 1, 1},
		{"pool beyond the cluster", 2, 5, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newMT(t, tc.workers, withPolicy(cluster.Policy{Name: cluster.PolicyWarmPool, Pool: tc.pool}, true))
			x.m.fillPools() // as New does
			x.acts = x.m.take()
			on := func(s state.Name) []string {
				var ids []string
				for _, id := range x.m.order {
					if x.state(id) == s {
						ids = append(ids, id)
					}
				}
				return ids
			}
			if got := on(state.Booting); len(got) != tc.wantOn {
				t.Fatalf("booting %v, want %d", got, tc.wantOn)
			}
			for _, id := range on(state.Booting) {
				x.hello(id)
			}
			// Idle past the first idle timeout: the pool stays.
			for _, id := range on(state.Idle) {
				x.fire(id)
			}
			if got := on(state.Idle); len(got) != tc.wantOn {
				t.Fatalf("idle after the idle timeout %v, want %d", got, tc.wantOn)
			}
			// A job takes one; another is powered on if one is off.
			inv := x.submit(time.Minute)
			if len(on(state.Working)) != 1 {
				t.Fatalf("the job did not go to a pool worker: %v", on(state.Working))
			}
			wantBooting := min(1, tc.workers-tc.wantOn)
			if got := on(state.Booting); len(got) != wantBooting {
				t.Fatalf("booting %v after a pool worker was taken, want %d", got, wantBooting)
			}
			// After its job the worker powers off (one job per boot).
			w := on(state.Working)[0]
			x.result(w, inv, protocol.Result{})
			x.wantState(w, state.Stopping)
		})
	}
}

// Workers beyond the pool (here started by a scale-up) power off once
// idle for FirstIdle; the pool's stay.
func TestPolicyWarmPoolTrimsSurplus(t *testing.T) {
	x := newMT(t, 3, withPolicy(cluster.Policy{Name: cluster.PolicyWarmPool, Pool: 1}, true))
	x.m.fillPools()
	x.acts = x.m.take()
	x.wantState("w0", state.Booting)
	x.wantState("w1", state.Off)
	x.ev(0, evWarm{n: 2, reply: make(chan int, 1)})
	x.wantState("w1", state.Booting)
	x.wantState("w2", state.Booting)
	for _, id := range []string{"w0", "w1", "w2"} {
		x.hello(id)
	}
	for _, id := range []string{"w0", "w1", "w2"} {
		x.fire(id)
	}
	stopping, idle := 0, 0
	for _, id := range []string{"w0", "w1", "w2"} {
		switch x.state(id) {
		case state.Stopping:
			stopping++
		case state.Idle:
			idle++
		}
	}
	if stopping != 2 || idle != 1 {
		t.Fatalf("after the idle timeout: %d stopping, %d idle; want 2 and 1", stopping, idle)
	}
}

// A QEMU worker whose reset comes after shutdown began stays off.
func TestPolicyRebootExitAfterShutdown(t *testing.T) {
	x := newMT(t, 1, withPolicy(rebootWhileQueued, true))
	first := x.submit(time.Minute)
	x.hello("w0")
	x.submit(time.Minute)
	x.result("w0", first, protocol.Result{})
	x.wantState("w0", state.Booting)
	x.ev(0, evShutdown{drained: make(chan struct{})})
	x.ev(time.Second, evExited{"w0", nil})
	x.wantState("w0", state.Off)
	if has[actPowerOn](x.acts, nil) {
		t.Fatalf("powered on while shutting down: %#v", x.acts)
	}
	if x.m.workers["w0"].bootFailures != 0 {
		t.Error("the reboot's exit counted as a failed boot")
	}
}

// A Config built in Go with a policy no flag or file could give is refused.
func TestPolicyConfigChecked(t *testing.T) {
	for _, p := range []cluster.Policy{{Name: "sometimes"}, {Name: cluster.PolicyWarmPool}} {
		_, err := New(Config{Cluster: cluster.Local(1), Policy: map[string]cluster.Policy{cluster.KindVM: p}})
		if !errors.Is(err, cluster.ErrPolicy) {
			t.Errorf("%+v: err %v, want ErrPolicy", p, err)
		}
	}
}

// warm-pool=2 through the real loop, connections and in-process workers:
// New powers two workers on before any call, a call runs on one of them
// without waiting for a boot, and a third is powered on to replace it.
func TestPolicyWarmPoolRealLoop(t *testing.T) {
	idle := make(chan string, 64)
	h := newHarness(t, 3, Config{Policy: map[string]cluster.Policy{cluster.KindVM: {Name: cluster.PolicyWarmPool, Pool: 2}},
		OnStateChange: func(c state.Change) {
			if c.To == state.Idle {
				idle <- c.Worker
			}
		}})
	waitIdle := func(n int) {
		t.Helper()
		for range n {
			select {
			case <-idle:
			case <-time.After(10 * time.Second):
				t.Fatalf("the pool did not fill: %+v", h.orch.Status())
			}
		}
	}
	waitIdle(2)
	inv, err := h.orch.Invoke(context.Background(), "float_operations", json.RawMessage(`{"n":10}`), 5*time.Second)
	if err != nil || inv.Err != nil {
		t.Fatalf("invocation: %v %v", err, inv.Err)
	}
	if inv.Connected.After(inv.Queued) {
		t.Errorf("the call waited for a boot (queued %s, worker connected %s): no pool worker took it", inv.Queued, inv.Connected)
	}
	waitIdle(1) // the replacement
	n := 0
	for _, w := range h.orch.Status().Workers {
		if w.State == state.Idle {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d idle workers after the replacement, want 2: %+v", n, h.orch.Status().Workers)
	}
}
