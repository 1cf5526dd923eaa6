package orchestrator

import (
	"fmt"
	"time"

	"context"
	"os"
	"runtime"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/protocol"
)

// maxBatch bounds how many queued events one turn of the loop handles
// before it commits their store writes and carries out their actions.
const maxBatch = 512

// loop is the orchestrator's one goroutine that changes state. Each turn
// takes every event waiting (up to maxBatch), applies them to the machine
// under o.mu, and carries out their actions. With a Store, the turn's
// store writes and the actions that must follow them go to the committer.
func (o *Orchestrator) loop(first []action) {
	defer close(o.loopDone)
	o.carryOut(first, 0)
	batch := make([]timedEvent, 0, maxBatch)
	for {
		select {
		case ev := <-o.events:
			batch = append(batch, ev)
		case <-o.stopped:
			return
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case ev := <-o.events:
				batch = append(batch, ev)
			default:
				break drain
			}
		}
		o.mu.Lock()
		o.m.turn++
		for _, ev := range batch {
			o.m.handle(ev.ev, ev.at)
		}
		acts := o.m.take()
		turn := o.m.turn
		o.mu.Unlock()
		batch = batch[:0]
		o.carryOut(acts, turn)
	}
}

// carryOut runs one turn's actions: with a Store, those that must wait
// for its writes go to the committer.
func (o *Orchestrator) carryOut(acts []action, turn uint64) {
	if o.commits != nil {
		var later []action
		acts, later = splitDurable(acts)
		if len(later) > 0 {
			o.commits <- commitBatch{turn, later}
		}
	}
	o.execute(acts)
}

type timedEvent struct {
	ev any
	at time.Time
}

// post hands an event to the loop, stamped with the clock's time; it
// reports false once the orchestrator has stopped.
func (o *Orchestrator) post(ev any) bool {
	select {
	case o.events <- timedEvent{ev, o.clock.Now()}:
		return true
	case <-o.stopped:
		return false
	}
}

// splitDurable separates the actions that must wait for the store.
func splitDurable(acts []action) (now, later []action) {
	for _, a := range acts {
		if durable(a) {
			later = append(later, a)
		} else {
			now = append(now, a)
		}
	}
	return now, later
}

// commitBatch is one turn's store writes and the actions that follow them.
type commitBatch struct {
	turn uint64
	acts []action
}

// committer commits store writes in groups: everything the loop handed
// over while the previous commit was on its way to disk goes into the
// next transaction, one fsync for all. After each commit it carries out
// the actions that waited for it, in order, and tells the loop.
func (o *Orchestrator) committer() {
	defer close(o.commitsDone)
	var group []commitBatch
	var last time.Duration // the last commit's
	for b := range o.commits {
		group = append(group[:0], b)
		// Let every runnable goroutine (the loop, connections, clients)
		// run before committing, as long as that brings more writes: a
		// commit costs about the same for one write as for a hundred.
		for yields := 0; yields < maxYields && len(group) < maxBatch; yields++ {
			n := len(group)
			group = o.takeCommits(group)
			if len(group) == n && yields > 0 {
				break
			}
			runtime.Gosched()
		}
		group = o.takeCommits(group)
		group = o.gather(group, last)
		var writes []StoreWrite
		for _, b := range group {
			for _, a := range b.acts {
				if p, ok := a.(actPersist); ok {
					writes = append(writes, StoreWrite{Invocation: p.inv, Finished: p.finished})
				}
			}
		}
		var err error
		if len(writes) > 0 {
			t0 := time.Now()
			err = o.cfg.Store.Commit(writes)
			last = time.Since(t0)
			if err != nil {
				o.log.Error("committing invocations to the store failed", "writes", len(writes), "err", err)
			}
		}
		// The loop learns of the commit before the events that follow it.
		o.post(evCommitted{group[len(group)-1].turn})
		for _, b := range group {
			for _, a := range b.acts {
				if acc, ok := a.(actAccepted); ok {
					o.accepted(acc, err)
					continue
				}
				o.execute([]action{a})
			}
		}
	}
}

// maxYields bounds how often the committer lets others run before it
// commits what it has.
const maxYields = 4

// gatherSlice is how long the committer sleeps at a time while it
// gathers more writes; maxGather bounds the whole wait.
const (
	gatherSlice = 100 * time.Microsecond
	maxGather   = 10 * time.Millisecond
	// gatherFactor: the wait may last this many times the last commit,
	// so that with one P, whose fsyncs stop everything, a busy
	// orchestrator spends about a fifth of its time or less in commits.
	gatherFactor = 4
	// maxGatherBackoff bounds how many commits go without a gather after
	// one found the P idle.
	maxGatherBackoff = 64
)

// gather waits for more writes when there is one P and the yields found
// several turns' worth, a sign that others are producing them, for up to
// gatherFactor times as long as the last commit took (at most maxGather):
// a slow disk then gets bigger groups. Yielding alone is not enough with
// one P: the network is polled only when no goroutine is runnable, and an
// fsync holds the only P (measured: no goroutine ran during any of
// bbolt's fdatasyncs at -cpu 1), so workers' results arriving over TCP
// were not seen before the commit and each commit carried 2-5 writes.
// Sleeping lets the scheduler poll the network. With more Ps the others
// run during the fsync and groups grow without waiting (measured: a wait
// there only lengthened each caller's round trip).
//
// A slice that brings nothing is not the end (a result may be on its way
// through the network), but two in a row, or one that overran (the P was
// idle: nothing is coming without the commit), are; so a single caller
// never waits here. An overrun costs about a millisecond (an idle P's
// timer granularity), so after a wait that brought nothing it skips the
// next 2, 4, ... up to 64 commits: with few callers it rarely waits; with
// many, it always gains.
func (o *Orchestrator) gather(group []commitBatch, last time.Duration) []commitBatch {
	if len(group) < 2 || runtime.GOMAXPROCS(0) > 1 {
		return group
	}
	if o.gatherSkip > 0 {
		o.gatherSkip--
		return group
	}
	window := min(max(gatherFactor*last, gatherSlice), maxGather)
	start, n0 := time.Now(), len(group)
	empty := 0
	for i := 0; i < int(maxGather/gatherSlice) && len(group) < maxBatch && time.Since(start) < window; i++ {
		n := len(group)
		t0 := time.Now()
		time.Sleep(gatherSlice)
		overran := time.Since(t0) > 4*gatherSlice
		if group = o.takeCommits(group); len(group) > n {
			empty = 0
			continue
		}
		if overran {
			if len(group) == n0 { // the wait brought nothing
				o.gatherBackoff = min(max(2*o.gatherBackoff, 2), maxGatherBackoff)
				o.gatherSkip = o.gatherBackoff
				return group
			}
			break
		}
		if empty++; empty == 2 {
			break
		}
	}
	o.gatherBackoff = 0
	return group
}

// takeCommits adds the batches waiting, up to maxBatch, to group.
func (o *Orchestrator) takeCommits(group []commitBatch) []commitBatch {
	for len(group) < maxBatch {
		select {
		case b, ok := <-o.commits:
			if !ok {
				return group
			}
			group = append(group, b)
		default:
			return group
		}
	}
	return group
}

// accepted answers Submit once its write is committed (or failed).
func (o *Orchestrator) accepted(a actAccepted, err error) {
	if err != nil {
		o.post(evAcceptFailed{a.inv})
		a.reply <- fmt.Errorf("invocation not accepted: persisting it failed: %w", err)
		return
	}
	// Queued by the loop before anything Submit's caller does next.
	o.post(evAccepted{a.inv})
	a.reply <- nil
}

// execute carries out actions in order.
func (o *Orchestrator) execute(acts []action) {
	for _, a := range acts {
		switch a := a.(type) {
		case actPersist:
		case actAccepted:
			// Without a Store there is nothing to wait for.
			o.accepted(a, nil)
		case actReply:
			a.reply <- a.err
		case actWarmed:
			a.reply <- a.n
		case actPowerOn:
			o.powerGo(a.w, func(ctx context.Context, c power.Controller) {
				err := o.powerOn(ctx, c, a.w, a.bundle)
				o.post(evPowerOn{a.w.ID, a.session, err})
			})
		case actPowerOff:
			o.powerGo(a.w, func(ctx context.Context, c power.Controller) {
				err := c.PowerOff(ctx, a.w)
				o.post(evPowerOff{a.w.ID, a.session, err})
			})
		case actSend:
			a.conn.send(a.typ, a.msg)
		case actClose:
			a.conn.close()
		case actHelloDone:
			a.reply <- a.r
		case actArm:
			o.timersMu.Lock()
			if t := o.timers[a.worker]; t != nil {
				t.Stop()
			}
			ev := evTimer{a.worker, a.session, a.timer}
			o.timers[a.worker] = o.clock.AfterFunc(a.after, func() { o.post(ev) })
			o.timersMu.Unlock()
		case actDisarm:
			o.timersMu.Lock()
			if t := o.timers[a.worker]; t != nil {
				t.Stop()
				delete(o.timers, a.worker)
			}
			o.timersMu.Unlock()
		case actDone:
			o.metrics.Record(a.inv)
			close(a.inv.done)
		case actRelease:
			close(a.inv.done)
		case actGiveBack:
			o.cfg.Queue.GiveBack(a.id)
		case actStarted:
			o.cfg.Queue.Started(a.inv)
		case actRecord:
			if o.energy != nil {
				o.energy.record(a.inv) // held until its energy is final
			} else if o.cfg.Recorder != nil {
				o.cfg.Recorder.Record(a.inv)
			}
		case actState:
			if o.energy != nil {
				o.energy.observe(a.change)
			}
			if o.cfg.OnStateChange != nil {
				o.cfg.OnStateChange(a.change)
			}
		case actClosed:
			close(a.ch)
		default:
			panic(fmt.Sprintf("orchestrator: unknown action %T", a))
		}
	}
}

// powerOn powers w on, with bundle in its boot when its controller can
// take it (power.BundleLoader). A bundle that cannot be opened is left
// out: the worker fetches it, or fails the job saying why.
func (o *Orchestrator) powerOn(ctx context.Context, c power.Controller, w cluster.Worker, bundle *protocol.BundleRef) error {
	bl, ok := c.(power.BundleLoader)
	if bundle == nil || !ok || o.cfg.Bundles == nil {
		return c.PowerOn(ctx, w)
	}
	f, err := o.cfg.Bundles.Open(bundle.Digest)
	if err == nil {
		defer f.Close()
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil && fi.Size() != bundle.Size {
			err = fmt.Errorf("the file has %d bytes, the deployment says %d", fi.Size(), bundle.Size)
		}
	}
	if err != nil {
		o.log.Error("cannot use a deployed function's bundle for a power-on; the worker will have to fetch it", "worker", w.ID, "digest", bundle.Digest, "err", err)
		return c.PowerOn(ctx, w)
	}
	return bl.PowerOnBundle(ctx, w, power.BootBundle{Digest: bundle.Digest, Size: bundle.Size, R: f})
}

// powerGo runs a controller call outside the loop: a GPIO press takes
// seconds.
func (o *Orchestrator) powerGo(w cluster.Worker, call func(context.Context, power.Controller)) {
	c := o.cfg.Controllers[w.Kind]
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		call(context.Background(), c)
	}()
}

var _ clock.Clock = clock.Real{}
