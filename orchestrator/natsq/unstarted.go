package natsq

import (
	"context"
	"encoding/json"
	"errors"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Deliveries handed back unstarted. An invocation's attempts are the
// starts on a worker before its delivery: JetStream's delivery count minus
// one, less the deliveries this or another instance gave back (nak)
// without starting it (no worker there runs it, or the instance shut
// down before a worker was free). Those are counted, before the nak, under
// the key ID.unstarted in the results bucket (an invocation id holds no
// dot, so no result's key is one; results expire with it).
//
// Why a count subtracted from the delivery count, not a header on a
// message republished with the real attempts: the delivery count is
// JetStream's, so a delivery that started (or might have) and whose
// instance then died is counted without anyone writing anything, and a
// crash can only leave a give-back uncounted (the write failed or never
// came: one attempt too many), never a start. A republish would need the
// original terminated after the copy is published (else a crash between
// the two loses the invocation), a new Nats-Msg-Id per copy (the dedupe
// window drops the same one), and would send the invocation to the back of
// the queue at every give-back.
//
// A record counts one delivery at most once (it keeps the last one it
// counted, so a write retried after a lost answer does not count it
// again), and only for the message it was written for (its stream
// sequence: an id queued again later, after the duplicate window, counts
// its own). A delivery that started here is never recorded: Started marks
// it before the orchestrator can give it back or stop.

// unstarted is the record under ID.unstarted.
type unstarted struct {
	Seq  uint64 `json:"seq"`  // the message's stream sequence
	N    int    `json:"n"`    // its deliveries handed back unstarted
	Last uint64 `json:"last"` // the last of them (its delivery count)
}

func unstartedKey(id string) string { return id + ".unstarted" }

// recordUnstarted counts h's delivery of invocation id as handed back
// unstarted. On failure (NATS away) it is not counted: one attempt too
// many, never one too few.
func (q *Queue) recordUnstarted(id string, h heldMsg) {
	if !validKey.MatchString(id) {
		return
	}
	// Not q.ctx: Close records what it gives back after cancelling it.
	ctx, cancel := context.WithTimeout(context.Background(), q.opts.PublishTimeout)
	defer cancel()
	if err := q.writeUnstarted(ctx, unstartedKey(id), h.seq, h.delivery); err != nil {
		q.log.Warn("shared queue: a give-back was not recorded; it counts as an attempt", "invocation", id, "err", err)
	}
}

func (q *Queue) writeUnstarted(ctx context.Context, key string, seq, delivery uint64) error {
	for range maxCAS {
		var u unstarted
		var rev uint64
		e, err := q.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			rev = e.Revision()
			if json.Unmarshal(e.Value(), &u) != nil || u.Seq != seq {
				u = unstarted{} // another message's: this one starts over
			}
		}
		if u.Seq == seq && u.Last >= delivery {
			return nil // counted already
		}
		data, _ := json.Marshal(unstarted{Seq: seq, N: u.N + 1, Last: delivery})
		if rev == 0 {
			_, err = q.kv.Create(ctx, key, data)
		} else {
			_, err = q.kv.Update(ctx, key, data, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return err
		}
	}
	return errors.New("its record kept changing")
}

// recordUnstartedAll records every message of held that did not start
// here, concurrently (shutdown).
func (q *Queue) recordUnstartedAll(held map[string]heldMsg) {
	if q.nc.Status() != nats.CONNECTED {
		return // the naks do not go either
	}
	sem := make(chan struct{}, storeConcurrency)
	var wg sync.WaitGroup
	for id, h := range held {
		if h.started || h.msg == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			q.recordUnstarted(id, h)
		}()
	}
	wg.Wait()
}

// unstartedBefore is how many deliveries of invocation id's message (stream
// sequence seq) before delivery were handed back unstarted; 0 when that
// cannot be read (one attempt too many, never too few).
func (q *Queue) unstartedBefore(id string, seq, delivery uint64) int {
	if !validKey.MatchString(id) {
		return 0
	}
	ctx, cancel := context.WithTimeout(q.ctx, q.opts.PublishTimeout)
	defer cancel()
	e, err := q.kv.Get(ctx, unstartedKey(id))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			q.log.Debug("shared queue: give-backs not read; they count as attempts", "invocation", id, "err", err)
		}
		return 0
	}
	var u unstarted
	if json.Unmarshal(e.Value(), &u) != nil || u.Seq != seq || u.Last >= delivery {
		return 0
	}
	return min(u.N, int(delivery)-1)
}
