package natsq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// submitAll submits n invocations of test_nap (keys prefix-i) round-robin
// through the instances, with clients goroutines, and returns them.
func submitAll(t *testing.T, ins []*instance, prefix string, n, ms, clients int) []*orchestrator.Invocation {
	t.Helper()
	invs := make([]*orchestrator.Invocation, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				inv, err := ins[i%len(ins)].orch.Submit("test_nap", napArgs(fmt.Sprintf("%s-%d", prefix, i), ms), 10*time.Second)
				if err != nil {
					t.Errorf("submit %d: %v", i, err)
					return
				}
				invs[i] = inv
			}
		}()
	}
	wg.Wait()
	return invs
}

// waitAll waits for every invocation and checks its result is its own key.
func waitAll(t *testing.T, invs []*orchestrator.Invocation, prefix string, limit time.Duration) {
	t.Helper()
	deadline := time.After(limit)
	for i, inv := range invs {
		if inv == nil {
			continue
		}
		select {
		case <-inv.Done():
		case <-deadline:
			t.Fatalf("invocation %d (%s) did not finish within %s", i, inv.ID, limit)
		}
		var got string
		if inv.Err != nil || json.Unmarshal(inv.Result, &got) != nil || got != fmt.Sprintf("%s-%d", prefix, i) {
			t.Errorf("invocation %d (%s): err %v, result %s", i, inv.ID, inv.Err, inv.Result)
		}
	}
}

// resultKeys counts the results bucket's keys.
func resultKeys(t *testing.T, q *Queue) map[string]bool {
	t.Helper()
	keys := map[string]bool{}
	lister, err := q.kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for k := range lister.Keys() {
		keys[k] = true
	}
	return keys
}

// Three instances share one queue: every invocation has exactly one
// result, nothing is lost, and each instance ran some.
func TestThreeInstancesShareOneQueue(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 600
	}
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	var ins []*instance
	for i := 0; i < 3; i++ {
		ins = append(ins, newInstance(t, fmt.Sprintf("mforch%d", i), ns.url(), key, instanceConfig{workers: 4, idle: time.Hour}))
	}
	start := time.Now()
	prefix := fmt.Sprintf("share-%d", time.Now().UnixNano())
	invs := submitAll(t, ins, prefix, n, 0, 64)
	waitAll(t, invs, prefix, 2*time.Minute)
	elapsed := time.Since(start)
	ids := map[string]bool{}
	for _, inv := range invs {
		if ids[inv.ID] {
			t.Errorf("id %s given twice", inv.ID)
		}
		ids[inv.ID] = true
	}
	keys := resultKeys(t, ins[0].q)
	for id := range ids {
		if !keys[id] {
			t.Errorf("no stored result for %s", id)
		}
	}
	reruns := 0
	for i := 0; i < n; i++ {
		if c := runCount(fmt.Sprintf("%s-%d", prefix, i)); c != 1 {
			reruns += c - 1
			if c == 0 {
				t.Errorf("invocation %d never ran", i)
			}
		}
	}
	var ran []int
	for _, in := range ins {
		s := in.q.Stats()
		ran = append(ran, s.Results)
		if s.Results == 0 {
			t.Errorf("%s stored no result: the queue is not shared", in.name)
		}
	}
	// Any instance answers for any invocation.
	for _, inv := range invs[:10] {
		for _, in := range ins {
			got, ok := in.orch.Lookup(inv.ID)
			if !ok || orchestrator.Response(got).Status != "finished" {
				t.Errorf("%s: lookup of %s: %v %+v", in.name, inv.ID, ok, got)
			}
		}
	}
	// GET /status on any instance shows the whole installation.
	rec := httptest.NewRecorder()
	ins[2].orch.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
	var st orchestrator.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if st.SharedQueueDepth == nil || *st.SharedQueueDepth != 0 || len(st.Instances) != 3 {
		t.Errorf("status: depth %v, %d instances: %s", st.SharedQueueDepth, len(st.Instances), rec.Body)
	}
	for i, in := range st.Instances {
		if in.Name != fmt.Sprintf("mforch%d", i) || len(in.Workers) != 4 {
			t.Errorf("status: instance %d: %s with %d workers", i, in.Name, len(in.Workers))
		}
	}
	var text strings.Builder
	st.WriteText(&text)
	if !strings.Contains(text.String(), "shared queue: 0 invocations queued or running; 3 instances") || !strings.Contains(text.String(), "INSTANCE") || !strings.Contains(text.String(), "mforch1 ") {
		t.Errorf("status text:\n%s", text.String())
	}
	t.Logf("%d invocations through 3 instances x 4 workers in %s (%.0f inv/s); results stored per instance %v; re-executions %d",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), ran, reruns)
	if reruns != 0 {
		t.Errorf("%d re-executions with no instance failing", reruns)
	}
}

// An instance dies while its workers run jobs: what it held finishes on
// the others within the ack wait and one job time.
func TestKilledInstanceWorkIsRedelivered(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	const ackWait = time.Second
	const job = 300 * time.Millisecond
	var ins []*instance
	for i := 0; i < 3; i++ {
		ins = append(ins, newInstance(t, fmt.Sprintf("mforch%d", i), ns.url(), key, instanceConfig{workers: 3, ackWait: ackWait, idle: time.Hour}))
	}
	victim, others := ins[0], ins[1:]
	prefix := fmt.Sprintf("kill-%d", time.Now().UnixNano())
	const n = 60
	// Submitted through the survivors: the victim's callers die with it.
	invs := submitAll(t, others, prefix, n, int(job/time.Millisecond), 8)
	// Until a job the victim holds has started in its worker (a worker
	// that is sent a job may not have started it yet: then nothing runs
	// twice).
	keyOf := map[string]string{}
	for i, inv := range invs {
		keyOf[inv.ID] = fmt.Sprintf("%s-%d", prefix, i)
	}
	startedHere := func() bool {
		victim.q.mu.Lock()
		defer victim.q.mu.Unlock()
		for id := range victim.q.held {
			if runCount(keyOf[id]) > 0 {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(10 * time.Second)
	for !startedHere() {
		if time.Now().After(deadline) {
			t.Fatal("the victim never ran a job")
		}
		time.Sleep(5 * time.Millisecond)
	}
	running := victim.orch.Status().Running
	victim.q.mu.Lock()
	held := map[string]bool{}
	for id := range victim.q.held {
		held[id] = true
	}
	victim.q.mu.Unlock()
	victim.kill()
	killed := time.Now()
	// What the victim held finishes on the others within the ack wait
	// and one job time (plus a second for a loaded host).
	var heldDone time.Duration
	bound := ackWait + job + time.Second
	for _, inv := range invs {
		if !held[inv.ID] {
			continue
		}
		select {
		case <-inv.Done():
		case <-time.After(30 * time.Second):
			t.Fatalf("invocation %s the victim held never finished", inv.ID)
		}
		heldDone = max(heldDone, time.Since(killed))
	}
	if heldDone > bound {
		t.Errorf("the victim's invocations finished %s after the kill, beyond ack wait + job + 1 s = %s", heldDone, bound)
	}
	waitAll(t, invs, prefix, 30*time.Second)
	took := time.Since(killed)
	reruns := 0
	for i := 0; i < n; i++ {
		reruns += runCount(fmt.Sprintf("%s-%d", prefix, i)) - 1
	}
	keys := resultKeys(t, others[0].q)
	for _, inv := range invs {
		if !keys[inv.ID] {
			t.Errorf("no stored result for %s", inv.ID)
		}
	}
	t.Logf("killed an instance with %d jobs running and %d invocations held: those finished on the others %s after the kill, all %d after %s (ack wait %s, job %s); re-executions %d",
		running, len(held), heldDone.Round(time.Millisecond), n, took.Round(time.Millisecond), ackWait, job, reruns)
	if reruns < 1 {
		t.Errorf("no re-execution, though the victim died with %d jobs running", running)
	}
	if reruns > len(held) {
		t.Errorf("%d re-executions, more than the %d the victim held", reruns, len(held))
	}
}

// The NATS server restarts mid-run (file storage): nothing acknowledged
// is lost, and submits while it is down are refused at once with 503 and
// Retry-After.
func TestNATSRestartLosesNothingAcknowledged(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	var ins []*instance
	for i := 0; i < 2; i++ {
		ins = append(ins, newInstance(t, fmt.Sprintf("mforch%d", i), ns.url(), key, instanceConfig{workers: 3, ackWait: 2 * time.Second, idle: time.Hour}))
	}
	prefix := fmt.Sprintf("restart-%d", time.Now().UnixNano())
	var accepted []*orchestrator.Invocation
	var keys []string
	submit := func(i int) error {
		k := fmt.Sprintf("%s-%d", prefix, i)
		inv, err := ins[i%2].orch.Submit("test_nap", napArgs(k, 20), 10*time.Second)
		if err == nil {
			accepted = append(accepted, inv)
			keys = append(keys, k)
		}
		return err
	}
	for i := 0; i < 200; i++ {
		if err := submit(i); err != nil {
			t.Fatal(err)
		}
	}
	depth, err := ins[0].q.Depth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ns.stop()
	t.Logf("NATS stopped with %d invocations queued or running", depth)
	// Submits while it is down: refused soon, with the sentinel and, over
	// HTTP, 503 with Retry-After.
	for !strings.Contains(ins[0].logs.String(), "disconnected from NATS") {
		time.Sleep(10 * time.Millisecond)
	}
	t0 := time.Now()
	err = submit(1000)
	if !errors.Is(err, orchestrator.ErrQueueDown) {
		t.Errorf("submit with NATS down: %v, want ErrQueueDown", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("submit with NATS down took %s", d)
	}
	rec := httptest.NewRecorder()
	ins[1].orch.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/invoke/test_nap?async=true", strings.NewReader(`{"k":"x","ms":1}`)))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("HTTP submit with NATS down: %d, Retry-After %q: %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	time.Sleep(500 * time.Millisecond) // jobs finish while it is down
	ns.start(t)
	t.Logf("restarted after %s", time.Since(t0))
	for i := 200; i < 300; i++ {
		var err error
		for try := 0; try < 100; try++ {
			if err = submit(i); !errors.Is(err, orchestrator.ErrQueueDown) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("submit %d after the restart: %v", i, err)
		}
	}
	t.Logf("submitted after the restart: %s", time.Since(t0))
	deadline := time.After(30 * time.Second)
	for i, inv := range accepted {
		select {
		case <-inv.Done():
		case <-deadline:
			t.Fatalf("acknowledged invocation %d (%s) lost across the NATS restart", i, inv.ID)
		}
		var got string
		if inv.Err != nil || json.Unmarshal(inv.Result, &got) != nil || got != keys[i] {
			t.Errorf("invocation %d: err %v result %s", i, inv.Err, inv.Result)
		}
	}
	t.Logf("all finished: %s", time.Since(t0))
	// Results reach callers at once again (not only through the
	// orchestrator's periodic lookups).
	t1 := time.Now()
	if err := submit(2000); err != nil {
		t.Fatal(err)
	}
	<-accepted[len(accepted)-1].Done()
	if d := time.Since(t1); d > time.Second {
		t.Errorf("an invocation after the restart took %s: results are not watched any more", d)
	}
	reruns := 0
	for _, k := range keys {
		reruns += runCount(k) - 1
	}
	t.Logf("%d acknowledged invocations across a NATS restart, all finished; re-executions %d", len(accepted), reruns)
}

// Submits with the same id, on two instances at once and again after it
// finished, run once and all get the one result.
func TestDuplicateSubmitsRunOnce(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	a := newInstance(t, "a", ns.url(), key, instanceConfig{workers: 2, idle: time.Hour})
	b := newInstance(t, "b", ns.url(), key, instanceConfig{workers: 2, idle: time.Hour})
	k := fmt.Sprintf("dup-%d", time.Now().UnixNano())
	id := "call-" + k
	var invs []*orchestrator.Invocation
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := []*instance{a, b}[i%2].orch
			inv, err := o.SubmitJob(orchestrator.JobSpec{ID: id, Function: "test_nap", Args: napArgs(k, 200)})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			invs = append(invs, inv)
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, inv := range invs {
		<-inv.Done()
		if inv.ID != id || inv.Err != nil || !strings.Contains(string(inv.Result), k) {
			t.Errorf("duplicate submit: id %s err %v result %s", inv.ID, inv.Err, inv.Result)
		}
	}
	again, err := b.orch.SubmitJob(orchestrator.JobSpec{ID: id, Function: "test_nap", Args: napArgs(k, 200)})
	if err != nil {
		t.Fatal(err)
	}
	<-again.Done()
	if again.Err != nil || !strings.Contains(string(again.Result), k) {
		t.Errorf("submit after it finished: err %v result %s", again.Err, again.Result)
	}
	if c := runCount(k); c != 1 {
		t.Errorf("ran %d times for %d submits of one id", c, len(invs)+1)
	}
	// Over HTTP: X-Invocation-Id, a retried call through another instance.
	k2 := k + "-http"
	var ids []string
	for _, in := range []*instance{a, b} {
		req := httptest.NewRequest("POST", "/invoke/test_nap", strings.NewReader(string(napArgs(k2, 50))))
		req.Header.Set("X-Invocation-Id", "http-"+k)
		rec := httptest.NewRecorder()
		in.orch.Handler().ServeHTTP(rec, req)
		var resp orchestrator.InvokeResponse
		json.Unmarshal(rec.Body.Bytes(), &resp)
		if rec.Code != http.StatusOK || !strings.Contains(string(resp.Result), k2) {
			t.Errorf("%s: HTTP call with X-Invocation-Id: %d %s", in.name, rec.Code, rec.Body)
		}
		ids = append(ids, resp.ID)
	}
	if ids[0] != "http-"+k || ids[1] != ids[0] || runCount(k2) != 1 {
		t.Errorf("HTTP calls with one X-Invocation-Id: ids %v, ran %d times", ids, runCount(k2))
	}
	// An id the queue cannot carry is refused.
	_, err = a.orch.SubmitJob(orchestrator.JobSpec{ID: "a.b c", Function: "test_nap", Args: napArgs("x", 1)})
	if !errors.Is(err, orchestrator.ErrBadID) {
		t.Errorf("bad id: %v, want ErrBadID", err)
	}
}

// An invocation whose every run stops the instance running it (a poison
// invocation) ends failed after MaxAttempts deliveries instead of being
// redelivered forever; a message that does not decode is terminated.
func TestPoisonInvocationEndsFailed(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	cfg := instanceConfig{workers: 1, ackWait: 500 * time.Millisecond, maxAttempts: 2, idle: time.Hour}
	k := fmt.Sprintf("poison-%d", time.Now().UnixNano())
	first := newInstance(t, "i0", ns.url(), key, cfg)
	inv, err := first.orch.Submit("test_nap", napArgs(k, 60_000), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	in := first
	for attempt := 1; attempt <= cfg.maxAttempts; attempt++ {
		deadline := time.Now().Add(10 * time.Second)
		for runCount(k) < attempt || in.orch.Status().Running == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("attempt %d never started", attempt)
			}
			time.Sleep(5 * time.Millisecond)
		}
		in.kill()
		in = newInstance(t, fmt.Sprintf("i%d", attempt), ns.url(), key, cfg)
	}
	deadline := time.Now().Add(10 * time.Second)
	var got *orchestrator.Invocation
	for {
		g, ok, err := in.q.Get(inv.ID)
		if err == nil && ok && g.Err != nil {
			got = g
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("poison invocation never ended: %+v %v %v", g, ok, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !errors.Is(got.Err, orchestrator.ErrWorkerLost) || got.Attempts != cfg.maxAttempts {
		t.Errorf("poison invocation: err %v attempts %d, want ErrWorkerLost after %d", got.Err, got.Attempts, cfg.maxAttempts)
	}
	if c := runCount(k); c != cfg.maxAttempts {
		t.Errorf("ran %d times, want %d", c, cfg.maxAttempts)
	}
	time.Sleep(2 * cfg.ackWait)
	if d, _ := in.q.Depth(context.Background()); d != 0 {
		t.Errorf("%d messages left in the stream", d)
	}

	// A message that does not decode never runs and is not redelivered.
	nc, err := nats.Connect(ns.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.Publish(context.Background(), "microfaas.inv.garbage", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for in.q.Stats().Poison == 0 {
		if time.Now().After(deadline) {
			t.Fatal("undecodable message never terminated")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * cfg.ackWait)
	if p := in.q.Stats().Poison; p != 1 {
		t.Errorf("undecodable message seen %d times", p)
	}
	// Whoever waits for it gets an answer that says what to fix.
	if g, ok, err := in.q.Get("garbage"); err != nil || !ok || !errors.Is(g.Err, orchestrator.ErrUnavailable) || !strings.Contains(g.Err.Error(), "--queue-key") {
		t.Errorf("result of the undecodable message: %+v %v %v", g, ok, err)
	}
	for _, w := range in.orch.Status().Workers {
		if w.State == state.Working {
			t.Errorf("worker %s working after the poison ended", w.ID)
		}
	}
}

// An instance that shuts down gives back what it holds and did not
// finish: the others run it at once, not after the ack wait.
func TestShutdownGivesBackHeldWork(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	const ackWait = 20 * time.Second // far beyond the test's bound
	leaving := newInstance(t, "leaving", ns.url(), key, instanceConfig{workers: 2, ackWait: ackWait, idle: time.Hour})
	prefix := fmt.Sprintf("leave-%d", time.Now().UnixNano())
	invs := submitAll(t, []*instance{leaving}, prefix, 10, 200, 4)
	deadline := time.Now().Add(10 * time.Second)
	for leaving.q.Stats().Delivered < 2 {
		if time.Now().After(deadline) {
			t.Fatal("nothing delivered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stay := newInstance(t, "stay", ns.url(), key, instanceConfig{workers: 2, ackWait: ackWait, idle: time.Hour})
	leaving.close() // Close: running jobs are not waited for
	start := time.Now()
	for i, inv := range invs {
		// The leaving instance's callers were released; the result is
		// stored all the same.
		<-inv.Done()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, ok, err := stay.q.Get(inv.ID)
			if err == nil && ok && doneYet(got) {
				if got.Err != nil || !strings.Contains(string(got.Result), fmt.Sprintf("%s-%d", prefix, i)) {
					t.Errorf("invocation %d: %v %s", i, got.Err, got.Result)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("invocation %d never finished after its instance left", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if d := time.Since(start); d > ackWait/2 {
		t.Errorf("the work given back took %s, as if it waited for the ack wait (%s)", d, ackWait)
	}
}

func doneYet(inv *orchestrator.Invocation) bool {
	select {
	case <-inv.Done():
		return true
	default:
		return false
	}
}

// A stream at its bound refuses a submit with ErrQueueFull (HTTP 429
// with Retry-After), at once.
func TestQueueFull(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	// No workers: nothing is pulled, the stream only fills.
	in := newInstanceOpts(t, "full", Options{URLs: ns.url(), KeyFile: keyFile(t), MaxQueued: 5, PublishTimeout: time.Second},
		instanceConfig{workers: 0})
	for i := 0; i < 5; i++ {
		if _, err := in.orch.Submit("test_nap", napArgs("full", 1), time.Second); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	_, err := in.orch.Submit("test_nap", napArgs("full", 1), time.Second)
	if !errors.Is(err, orchestrator.ErrQueueFull) {
		t.Errorf("submit beyond the bound: %v, want ErrQueueFull", err)
	}
	rec := httptest.NewRecorder()
	in.orch.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/invoke/test_nap?async=true", strings.NewReader(`{"k":"x","ms":1}`)))
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Errorf("HTTP submit beyond the bound: %d, Retry-After %q: %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
}
