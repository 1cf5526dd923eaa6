package natsq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/microfaas/microfaas/orchestrator"
)

// Running invocations. When a worker starts an invocation, the instance
// running it puts a running entry under the invocation's key in the
// results bucket (one write per start): the invocation as it started and
// the instance's name (running_on). Any instance's GET /invocations/ID then
// says running, on which instance and worker. The result replaces the
// entry with a compare-and-set on its revision, so the first result still
// wins and a running entry never replaces a result.

// runningEntry is what tells a running entry from a result.
type runningEntry struct {
	RunningOn string `json:"running_on"`
}

// starting is a running entry's write: done once it is written (or
// failed), rev its revision (0: not written).
type starting struct {
	done chan struct{}
	rev  uint64
}

// maxCAS bounds the compare-and-set rounds of one write.
const maxCAS = 4

// Started puts inv's running entry, in the background
// (orchestrator.SharedQueue).
func (q *Queue) Started(inv *orchestrator.Invocation) {
	// First of all: this delivery counts as an attempt, whatever follows.
	q.mu.Lock()
	if h, ok := q.held[inv.ID]; ok {
		if !h.started {
			q.stats.Started++
		}
		h.started = true
		q.held[inv.ID] = h
	}
	q.mu.Unlock()
	data, err := q.codec.EncodeResult(inv)
	if err != nil || len(data) < 2 || !validKey.MatchString(inv.ID) {
		return
	}
	// The instance's name is a key already: nothing in it to escape.
	data = append(data[:len(data)-1], []byte(`,"running_on":"`+q.opts.Name+`"}`)...)
	st := &starting{done: make(chan struct{})}
	q.mu.Lock()
	if _, ok := q.held[inv.ID]; !ok {
		q.mu.Unlock()
		return // given back or finished meanwhile
	}
	q.starts[inv.ID] = st
	q.mu.Unlock()
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		defer close(st.done)
		ctx, cancel := context.WithTimeout(q.ctx, q.opts.PublishTimeout)
		defer cancel()
		rev, _, err := q.writeOver(ctx, inv.ID, data, 0)
		if err != nil && q.ctx.Err() == nil {
			q.log.Debug("shared queue: the running entry was not written; other instances say queued", "invocation", inv.ID, "err", err)
		}
		st.rev = rev
	}()
}

// isRunning reports whether a results bucket value is a running entry,
// and on which instance.
func isRunning(v []byte) (string, bool) {
	var e runningEntry
	if json.Unmarshal(v, &e) != nil || e.RunningOn == "" {
		return "", false
	}
	return e.RunningOn, true
}

// errFinal: the key holds a result already.
var errFinal = errors.New("a result is stored already")

// writeOver writes data under id unless a result is there: over revision
// rev (0: none expected) or, when the key changed meanwhile, over the
// running entry it holds now, for at most maxCAS rounds. It returns the
// new revision, or errFinal (and the stored result) when a result was
// stored first.
func (q *Queue) writeOver(ctx context.Context, id string, data []byte, rev uint64) (uint64, []byte, error) {
	for range maxCAS {
		var err error
		var got uint64
		if rev == 0 {
			got, err = q.kv.Create(ctx, id, data)
		} else {
			got, err = q.kv.Update(ctx, id, data, rev)
		}
		if err == nil {
			return got, nil, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return 0, nil, err
		}
		e, err := q.kv.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			rev = 0
			continue
		}
		if err != nil {
			return 0, nil, err
		}
		if _, running := isRunning(e.Value()); !running {
			return 0, e.Value(), errFinal
		}
		rev = e.Revision()
	}
	return 0, nil, fmt.Errorf("invocation %s: its entry kept changing (%d tries)", id, maxCAS)
}

// finalResult is the result stored for id, if one is (not a running
// entry).
func (q *Queue) finalResult(ctx context.Context, id string) ([]byte, bool, error) {
	e, err := q.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if _, running := isRunning(e.Value()); running {
		return nil, false, nil
	}
	return e.Value(), true, nil
}
