package natsq

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// userFunction writes an executable user function named name into a new
// folder, which answers its own name.
func userFunction(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\ncat >/dev/null\necho '%q'\n", name)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// waitIdle waits until n of in's workers are idle (their hellos are in).
func waitIdle(t *testing.T, in *instance, n int) {
	t.Helper()
	eventually(t, in.name+"'s workers idle", func() bool {
		idle := 0
		for _, w := range in.orch.Status().Workers {
			if w.State == state.Idle {
				idle++
			}
		}
		return idle >= n
	})
}

// Instances pull per function: A's workers run only f1 (of the user
// functions), B's only f2. A mix of both, submitted through both, runs
// each invocation on the instance that can run it, at once: none waits
// for an ack wait (20 s) to pass, and none is given back.
func TestPullPerFunction(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	const ackWait = 20 * time.Second
	a := newInstance(t, "mforch-a", ns.url(), key, instanceConfig{workers: 2, ackWait: ackWait, idle: time.Hour, functionsDir: userFunction(t, "f1")})
	b := newInstance(t, "mforch-b", ns.url(), key, instanceConfig{workers: 2, ackWait: ackWait, idle: time.Hour, functionsDir: userFunction(t, "f2")})
	// Boot every worker once: their hellos say what they run.
	if a.orch.Warm("f1", 2) != 2 || b.orch.Warm("f2", 2) != 2 {
		t.Fatal("warming up did not power on every worker")
	}
	waitIdle(t, a, 2)
	waitIdle(t, b, 2)
	start := time.Now()
	var all []*orchestrator.Invocation
	// Each function's first submit goes through an instance that runs it
	// (so the queue knows it); then both go through both.
	for i := 0; i < 40; i++ {
		fn, via := "f1", a
		if i%2 == 1 {
			fn = "f2"
		}
		if i >= 2 && i%4 >= 2 {
			via = b
		} else if i < 2 && fn == "f2" {
			via = b
		}
		inv, err := via.orch.Submit(fn, nil, 10*time.Second)
		if err != nil {
			t.Fatalf("submit %d (%s through %s): %v", i, fn, via.name, err)
		}
		all = append(all, inv)
	}
	for _, inv := range all {
		select {
		case <-inv.Done():
		case <-time.After(ackWait / 2):
			t.Fatalf("%s (%s) not done after %v: it waits for an instance that cannot run it", inv.ID, inv.Function, ackWait/2)
		}
	}
	took := time.Since(start)
	for _, inv := range all {
		if inv.Err != nil {
			t.Errorf("%s (%s): %v", inv.ID, inv.Function, inv.Err)
			continue
		}
		if want := inv.Function; !strings.Contains(string(inv.Result), want) {
			t.Errorf("%s: result %s, want %s", inv.ID, inv.Result, want)
		}
		if inv.Attempts != 1 {
			t.Errorf("%s (%s): %d attempts", inv.ID, inv.Function, inv.Attempts)
		}
	}
	// Which instance ran each: its queue counted the delivery.
	da, db := a.q.Stats().Delivered, b.q.Stats().Delivered
	if da != 20 || db != 20 {
		t.Errorf("delivered: a %d, b %d; want 20 each (a runs f1 only, b f2 only)", da, db)
	}
	if took > ackWait/2 {
		t.Errorf("40 invocations took %v: some waited for the ack wait (%v)", took, ackWait)
	}
	t.Logf("40 invocations of f1 (a only) and f2 (b only), through both: all done in %v (ack wait %v); delivered a %d, b %d", took, ackWait, da, db)
}

// An installation upgrading from one consumer for every subject
// (SUBJECT.inv.ID) keeps what it queued: the new mforch narrows the old
// consumer to the old subjects, drains them, and queues new invocations
// per function.
func TestUpgradeDrainsLegacySubjects(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	// What the previous mforch made (its settings), with invocations in it.
	nc, err := nats.Connect(ns.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MICROFAAS", Subjects: []string{"microfaas.inv.>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "mforch",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1, MaxAckPending: -1, MaxWaiting: 4096}); err != nil {
		t.Fatal(err)
	}
	codec, err := orchestrator.OpenQueueCodec(key)
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("legacy-%d", time.Now().UnixNano())
	var ids []string
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		data, err := codec.Encode(&orchestrator.Invocation{ID: id, Function: "test_nap", Args: napArgs(id, 10), Timeout: 10 * time.Second, Queued: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, "microfaas.inv."+id, data, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	in := newInstance(t, "mforch-new", ns.url(), key, instanceConfig{workers: 2, ackWait: 20 * time.Second, idle: time.Hour})
	// A new submit goes on its function's subject.
	inv, err := in.orch.Submit("test_nap", napArgs(prefix+"-new", 10), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.q.stream.GetLastMsgForSubject(ctx, "microfaas.fn.test_nap."+inv.ID); err != nil {
		t.Errorf("a new invocation is not on its function's subject: %v", err)
	}
	<-inv.Done()
	for _, id := range ids {
		eventually(t, "the queued "+id+" runs", func() bool {
			got, ok, err := in.q.Get(id)
			return err == nil && ok && doneYet(got)
		})
		if runCount(id) != 1 {
			t.Errorf("%s ran %d times", id, runCount(id))
		}
	}
	ci, err := in.q.cons.Info(ctx)
	if err != nil || ci.Config.FilterSubject != "microfaas.inv.>" {
		t.Errorf("the old consumer: %+v %v; want it narrowed to microfaas.inv.>", ci, err)
	}
}

// sleepyFunctions writes executable user functions into a new folder:
// each sleeps its seconds, then answers its own name.
func sleepyFunctions(t *testing.T, secs map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, s := range secs {
		script := fmt.Sprintf("#!/bin/sh\ncat >/dev/null\nsleep %s\necho '%q'\n", s, name)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Workers whose functions overlap in part: vm0 runs f1, vm1 f1 and f2,
// vm2 f2. With f1 (4 s) running on vm0, the instance runs two f2 (2 s)
// at once (a matching puts them on vm1 and vm2); counting f1 against f2
// because they share vm1 left room for one, and the second waited for
// the first to finish.
func TestPullOverlappingFunctions(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	f1 := sleepyFunctions(t, map[string]string{"f1": "4"})
	both := sleepyFunctions(t, map[string]string{"f1": "4", "f2": "2"})
	f2 := sleepyFunctions(t, map[string]string{"f2": "2"})
	in := newInstance(t, "mforch-a", ns.url(), key, instanceConfig{workers: 3, ackWait: 20 * time.Second, idle: time.Hour,
		functionsDirs: map[string]string{"vm0": f1, "vm1": both, "vm2": f2}})
	if in.orch.Warm("f1", 3) != 3 {
		t.Fatal("warming up did not power on every worker")
	}
	waitIdle(t, in, 3)
	// f2 known first: f1's pull requests then wait 250 ms, not 1 s, for
	// the f1 that may come (they hold a worker meanwhile).
	first, err := in.orch.Submit("f2", nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	<-first.Done()
	long, err := in.orch.Submit("f1", nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "f1 running", func() bool {
		busy := 0
		for _, w := range in.orch.Status().Workers {
			if w.State != state.Idle {
				busy++
			}
		}
		return busy == 1
	})
	var short []*orchestrator.Invocation
	for range 2 {
		inv, err := in.orch.Submit("f2", nil, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		short = append(short, inv)
	}
	for _, inv := range append(short, long) {
		select {
		case <-inv.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s (%s) not done after 10 s", inv.ID, inv.Function)
		}
		if inv.Err != nil || inv.Attempts != 1 {
			t.Fatalf("%s (%s): %v, %d attempts", inv.ID, inv.Function, inv.Err, inv.Attempts)
		}
	}
	if long.Worker != "vm0" {
		t.Errorf("f1 ran on %s, want vm0 (the first idle worker that runs it)", long.Worker)
	}
	a, b := short[0], short[1]
	if b.Started.Before(a.Started) {
		a, b = b, a
	}
	if !b.Started.Before(a.Finished) {
		t.Errorf("the two f2 ran one after the other (%s on %s %s-%s, %s on %s from %s): the instance pulled one at a time",
			a.ID, a.Worker, a.Started.Format("15:04:05.000"), a.Finished.Format("15:04:05.000"), b.ID, b.Worker, b.Started.Format("15:04:05.000"))
	}
	if a.Worker == b.Worker || a.Worker == "vm0" || b.Worker == "vm0" {
		t.Errorf("f2 ran on %s and %s, want vm1 and vm2", a.Worker, b.Worker)
	}
	t.Logf("f1 on %s; f2 on %s from %s and on %s from %s (%v apart)", long.Worker, a.Worker, a.Started.Format("15:04:05.000"),
		b.Worker, b.Started.Format("15:04:05.000"), b.Started.Sub(a.Started))
}
