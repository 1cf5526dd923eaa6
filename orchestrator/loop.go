package orchestrator

import (
	"fmt"
	"time"

	"context"

	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/inventory"
	"github.com/microfaas/microfaas/orchestrator/power"
)

// maxBatch bounds how many queued events one turn of the loop handles
// before it commits their store writes and carries out their actions.
const maxBatch = 512

// loop is the orchestrator's one goroutine that changes state. Each turn
// takes every event waiting (up to maxBatch), applies them to the machine
// under o.mu, commits their store writes in one transaction (group
// commit: one fsync for all of them) and then carries out the other
// actions. Events that follow from a commit (an accepted submission) are
// handled in the same turn.
func (o *Orchestrator) loop(first []action) {
	defer close(o.loopDone)
	batch := o.execute(first, make([]timedEvent, 0, maxBatch))
	for {
		for len(batch) > 0 {
			o.mu.Lock()
			for _, ev := range batch {
				o.m.handle(ev.ev, ev.at)
			}
			acts := o.m.take()
			o.mu.Unlock()
			batch = o.execute(acts, batch[:0])
		}
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
	}
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

// execute carries out one turn's actions and returns the events that
// follow from them.
func (o *Orchestrator) execute(acts []action, next []timedEvent) []timedEvent {
	var commitErr error
	if o.cfg.Store != nil {
		var writes []StoreWrite
		for _, a := range acts {
			if p, ok := a.(actPersist); ok {
				writes = append(writes, StoreWrite{Invocation: p.inv, Finished: p.finished})
			}
		}
		if len(writes) > 0 {
			if commitErr = o.cfg.Store.Commit(writes); commitErr != nil {
				o.log.Error("committing invocations to the store failed", "writes", len(writes), "err", commitErr)
			}
		}
	}
	for _, a := range acts {
		switch a := a.(type) {
		case actPersist:
		case actAccepted:
			if commitErr != nil {
				next = append(next, timedEvent{evAcceptFailed{a.inv}, o.clock.Now()})
				a.reply <- fmt.Errorf("invocation not accepted: persisting it failed: %w", commitErr)
			} else {
				next = append(next, timedEvent{evAccepted{a.inv}, o.clock.Now()})
				a.reply <- nil
			}
		case actReply:
			a.reply <- a.err
		case actWarmed:
			a.reply <- a.n
		case actPowerOn:
			o.powerGo(a.w, func(ctx context.Context, c power.Controller) {
				err := c.PowerOn(ctx, a.w)
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
			if t := o.timers[a.worker]; t != nil {
				t.Stop()
			}
			ev := evTimer{a.worker, a.session, a.timer}
			o.timers[a.worker] = o.clock.AfterFunc(a.after, func() { o.post(ev) })
		case actDisarm:
			if t := o.timers[a.worker]; t != nil {
				t.Stop()
				delete(o.timers, a.worker)
			}
		case actDone:
			o.metrics.Record(a.inv)
			close(a.inv.done)
		case actRelease:
			close(a.inv.done)
		case actRecord:
			if o.cfg.Recorder != nil {
				o.cfg.Recorder.Record(a.inv)
			}
		case actState:
			if o.cfg.OnStateChange != nil {
				o.cfg.OnStateChange(a.change)
			}
		case actClosed:
			close(a.ch)
		default:
			panic(fmt.Sprintf("orchestrator: unknown action %T", a))
		}
	}
	return next
}

// powerGo runs a controller call outside the loop: a GPIO press takes
// seconds.
func (o *Orchestrator) powerGo(w inventory.Worker, call func(context.Context, power.Controller)) {
	c := o.cfg.Controllers[w.Kind]
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		call(context.Background(), c)
	}()
}

var _ clock.Clock = clock.Real{}
