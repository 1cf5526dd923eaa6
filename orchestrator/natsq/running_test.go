package natsq

import (
	"fmt"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator"
)

// Once a worker starts an invocation, every instance says it runs, and
// where: the running entry in the results bucket. Its result then replaces
// the entry, and a second result does not.
func TestRunningSeenOnEveryInstance(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	var ins []*instance
	for i := 0; i < 3; i++ {
		ins = append(ins, newInstance(t, fmt.Sprintf("mforch%d", i), ns.url(), key, instanceConfig{workers: 1, ackWait: 20 * time.Second, idle: time.Hour}))
	}
	k := fmt.Sprintf("running-%d", time.Now().UnixNano())
	inv, err := ins[0].orch.Submit("test_nap", napArgs(k, 1500), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the job starts", func() bool { return runCount(k) == 1 })
	runner := ""
	for _, in := range ins {
		if in.q.Stats().Delivered == 1 {
			runner = in.name
		}
	}
	for _, in := range ins {
		in := in
		var resp orchestrator.InvokeResponse
		eventually(t, in.name+" says running", func() bool {
			got, ok := in.orch.Lookup(inv.ID)
			if !ok {
				return false
			}
			resp = orchestrator.Response(got)
			return resp.Status == "running"
		})
		if resp.Worker == "" {
			t.Errorf("%s: running on no worker: %+v", in.name, resp)
		}
		if in.name != runner && resp.Instance != runner {
			t.Errorf("%s: running on instance %q, want %q", in.name, resp.Instance, runner)
		}
	}
	<-inv.Done()
	if inv.Err != nil {
		t.Fatal(inv.Err)
	}
	for _, in := range ins {
		eventually(t, in.name+" says finished", func() bool {
			got, ok := in.orch.Lookup(inv.ID)
			return ok && orchestrator.Response(got).Status == "finished"
		})
	}
	// A late running entry (a second run's start) does not replace the
	// result.
	if _, _, err := ins[1].q.writeOver(t.Context(), inv.ID, []byte(`{"id":"x","running_on":"late"}`), 0); err != errFinal {
		t.Errorf("a running entry over a result: %v, want errFinal", err)
	}
	t.Logf("ran on %s; every instance said running there", runner)
}
