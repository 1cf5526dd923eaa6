package natsq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator"
)

// starts sums the deliveries started on the instances' workers.
func starts(ins ...*instance) int {
	n := 0
	for _, in := range ins {
		n += in.q.Stats().Started
	}
	return n
}

// givenBack has n fresh instances, one after the other, pull invocation
// id and give it back unstarted: their one worker's hello does not list
// its function (what a fresh instance guesses it runs), so it goes back to
// the queue at once.
func givenBack(t *testing.T, url, key, id string, n int, c instanceConfig) {
	t.Helper()
	other := userFunction(t, "other")
	for i := range n {
		c.workers, c.functionsDir = 1, other
		g := newInstance(t, fmt.Sprintf("lacks-%d", i), url, key, c)
		// At least once: a pull request of its that was under way when
		// it gave the invocation back may get the redelivery and give it
		// back again.
		eventually(t, fmt.Sprintf("instance %d gives %s back", i, id), func() bool { return g.q.Stats().GivenBack >= 1 })
		g.close()
	}
}

// unstartedCount is the give-backs recorded for id.
func unstartedCount(t *testing.T, q *Queue, id string) int {
	t.Helper()
	e, err := q.kv.Get(context.Background(), unstartedKey(id))
	if err != nil {
		t.Fatalf("give-backs of %s: %v", id, err)
	}
	var u unstarted
	if err := json.Unmarshal(e.Value(), &u); err != nil {
		t.Fatal(err)
	}
	return u.N
}

// An invocation given back more often than MaxAttempts (by instances whose
// workers lack its function, and by one that shut down while its worker
// booted) still runs, once, and reports one attempt: only starts on a
// worker count.
func TestGiveBackIsNoAttempt(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	cfg := instanceConfig{ackWait: 20 * time.Second, maxAttempts: 2, idle: time.Hour}
	// No workers: it only submits.
	submitter := newInstance(t, "submitter", ns.url(), key, cfg)
	fx := sleepyFunctions(t, map[string]string{"fx": "0"})
	inv, err := submitter.orch.Submit("fx", nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	givenBack(t, ns.url(), key, inv.ID, 3, cfg)
	// Held while its worker boots, given back at shutdown.
	slow := cfg
	slow.workers, slow.functionsDir, slow.bootDelay = 1, fx, time.Minute
	s := newInstance(t, "shuts-down", ns.url(), key, slow)
	eventually(t, "the shutting-down instance holds it", func() bool { return s.q.Stats().Delivered == 1 })
	s.close()
	if s.q.Stats().Started != 0 {
		t.Fatal("started before a worker that runs it was up")
	}
	if n := unstartedCount(t, submitter.q, inv.ID); n < 4 {
		t.Errorf("%d give-backs recorded, want 4 or more", n)
	}
	cfg.workers, cfg.functionsDir = 1, fx
	r := newInstance(t, "runs-it", ns.url(), key, cfg)
	select {
	case <-inv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("not done 10 s after an instance that runs it started")
	}
	if inv.Err != nil || inv.Attempts != 1 || inv.Worker == "" {
		t.Errorf("after 4 give-backs (MaxAttempts %d): err %v, attempts %d, worker %q; want it run once, 1 attempt",
			cfg.maxAttempts, inv.Err, inv.Attempts, inv.Worker)
	}
	if st := r.q.Stats(); st.Delivered != 1 || st.Started != 1 {
		t.Errorf("the instance that runs it: %+v", st)
	}
	if got, ok, err := r.q.Get(unstartedKey(inv.ID)); ok || err != nil {
		t.Errorf("the give-back record is found as an invocation: %+v %v %v", got, ok, err)
	}
}

// A poison invocation given back first, more often than MaxAttempts, still
// runs MaxAttempts times (its instance killed mid-job each time) and then
// ends failed, with MaxAttempts attempts.
func TestPoisonAfterGiveBacks(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	cfg := instanceConfig{ackWait: 500 * time.Millisecond, maxAttempts: 2, idle: time.Hour}
	submitter := newInstance(t, "submitter", ns.url(), key, cfg)
	fx := sleepyFunctions(t, map[string]string{"fx": "60"})
	inv, err := submitter.orch.Submit("fx", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	givenBack(t, ns.url(), key, inv.ID, 3, cfg)
	run := cfg
	run.workers, run.functionsDir = 1, fx
	var runners []*instance
	for attempt := 1; attempt <= cfg.maxAttempts; attempt++ {
		in := newInstance(t, fmt.Sprintf("runs-%d", attempt), ns.url(), key, run)
		eventually(t, fmt.Sprintf("attempt %d started", attempt), func() bool {
			return in.q.Stats().Started == 1 && in.orch.Status().Running > 0
		})
		in.kill() // as a crash: nothing acknowledged, nothing given back
		runners = append(runners, in)
	}
	last := newInstance(t, "last", ns.url(), key, run)
	runners = append(runners, last)
	var got *orchestrator.Invocation
	eventually(t, "the poison invocation ends", func() bool {
		g, ok, err := last.q.Get(inv.ID)
		if err == nil && ok && g.Err != nil {
			got = g
			return true
		}
		return false
	})
	if !errors.Is(got.Err, orchestrator.ErrWorkerLost) || got.Attempts != cfg.maxAttempts {
		t.Errorf("poison invocation: err %v attempts %d, want ErrWorkerLost after %d", got.Err, got.Attempts, cfg.maxAttempts)
	}
	if n := starts(runners...); n != cfg.maxAttempts {
		t.Errorf("started %d times, want %d", n, cfg.maxAttempts)
	}
}

// A give-back record counts a delivery once, only for its own message,
// and never more than the deliveries before the one reading it.
func TestUnstartedRecord(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	in := newInstance(t, "records", ns.url(), keyFile(t), instanceConfig{})
	ctx := context.Background()
	key := unstartedKey("inv1")
	steps := []struct {
		what          string
		seq, delivery uint64 // a give-back written, unless delivery is 0
		readSeq       uint64 // then a delivery of readSeq, readAt
		readAt        uint64
		want          int
	}{
		{what: "none yet", readSeq: 7, readAt: 2, want: 0},
		{what: "first delivery given back", seq: 7, delivery: 1, readSeq: 7, readAt: 2, want: 1},
		{what: "the same delivery again (a retried write)", seq: 7, delivery: 1, readSeq: 7, readAt: 2, want: 1},
		{what: "second delivery given back", seq: 7, delivery: 2, readSeq: 7, readAt: 3, want: 2},
		{what: "an older delivery after a newer one", seq: 7, delivery: 1, readSeq: 7, readAt: 3, want: 2},
		{what: "read by a delivery the record is not before", readSeq: 7, readAt: 2, want: 0},
		{what: "another message under the id", readSeq: 9, readAt: 3, want: 0},
		{what: "the other message's give-back starts over", seq: 9, delivery: 1, readSeq: 9, readAt: 2, want: 1},
	}
	for _, s := range steps {
		if s.delivery != 0 {
			if err := in.q.writeUnstarted(ctx, key, s.seq, s.delivery); err != nil {
				t.Fatalf("%s: %v", s.what, err)
			}
		}
		if got := in.q.unstartedBefore("inv1", s.readSeq, s.readAt); got != s.want {
			t.Errorf("%s: %d unstarted before delivery %d of seq %d, want %d", s.what, got, s.readAt, s.readSeq, s.want)
		}
	}
}
