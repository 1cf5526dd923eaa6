package natsq

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// working is the id of in's worker that runs a job ("" if none).
func working(in *instance) string {
	for _, w := range in.orch.Status().Workers {
		if w.State == state.Working {
			return w.ID
		}
	}
	return ""
}

// A worker killed mid-job in shared mode: its invocation goes back to the
// shared queue as a started delivery, so the retry reports 2 attempts;
// the instance is then killed while the retry runs, and the next delivery
// counts both starts: 3 attempts (run by another instance), or with
// MaxAttempts 2 it ends failed as a poison without a third start. A retry
// started again within one delivery (as without a shared queue) would
// leave the next delivery counting 2.
func TestLocalRetryCountsAsAttempt(t *testing.T) {
	for _, tc := range []struct {
		maxAttempts int
		poison      bool
	}{{3, false}, {2, true}} {
		t.Run(fmt.Sprintf("max%d", tc.maxAttempts), func(t *testing.T) {
			ns := startNATS(t, t.TempDir(), 0)
			key := keyFile(t)
			cfg := instanceConfig{ackWait: 500 * time.Millisecond, maxAttempts: tc.maxAttempts, idle: time.Hour}
			slow := cfg
			slow.workers, slow.functionsDir = 2, sleepyFunctions(t, map[string]string{"fx": "60"})
			a := newInstance(t, "a", ns.url(), key, slow)
			inv, err := a.orch.Submit("fx", nil, 2*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			var first string
			eventually(t, "the first start", func() bool { first = working(a); return first != "" })
			if err := a.sim.PowerOff(context.Background(), cluster.Worker{ID: first}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the retry started", func() bool { return a.q.Stats().Started == 2 && working(a) != "" })
			if st := a.q.Stats(); st.GivenBack != 1 || st.Delivered != 2 {
				t.Errorf("a: %+v; want the lost job given back once and delivered again", st)
			}
			eventually(t, "the retry's running entry says attempt 2", func() bool {
				r, ok, err := a.q.Get(inv.ID)
				return err == nil && ok && r.Instance == "a" && r.Attempts == 2
			})
			t.Log("retry started; killing a")
			a.kill() // as a crash: nothing acknowledged, nothing given back
			t.Log("a killed")

			quick := cfg
			quick.workers, quick.functionsDir = 1, sleepyFunctions(t, map[string]string{"fx": "0"})
			b := newInstance(t, "b", ns.url(), key, quick)
			var got *orchestrator.Invocation
			eventually(t, "the invocation ends", func() bool {
				g, ok, err := b.q.Get(inv.ID)
				if err == nil && ok && !g.Finished.IsZero() {
					got = g
					return true
				}
				return false
			})
			if tc.poison {
				if !errors.Is(got.Err, orchestrator.ErrWorkerLost) || got.Attempts != 2 || b.q.Stats().Started != 0 {
					t.Errorf("err %v, attempts %d, started on b %d; want ErrWorkerLost after 2 attempts, no third start",
						got.Err, got.Attempts, b.q.Stats().Started)
				}
				return
			}
			if got.Err != nil || got.Attempts != 3 || b.q.Stats().Started != 1 {
				t.Errorf("err %v, attempts %d, started on b %d; want it run on b as attempt 3", got.Err, got.Attempts, b.q.Stats().Started)
			}
		})
	}
}
