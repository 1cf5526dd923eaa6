package natsq

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/openfaas"
)

// State is a key-value bucket every instance shares, its values sealed
// under the queue's key (they hold secrets): the OpenFaaS provider's
// deployments and secrets (openfaas.SharedState).
type State struct {
	q  *Queue
	kv jetstream.KeyValue
}

var (
	_ openfaas.RevisionedState = (*State)(nil)
	_ openfaas.CallbackRelay   = (*State)(nil)
)

// OnCallback: the queue's (Queue.OnCallback), so the provider that shares
// this state sends the callbacks this instance claims.
func (s *State) OnCallback(send func(callback []byte, res *orchestrator.Invocation)) {
	s.q.OnCallback(send)
}

// State opens (making it if needed) the shared bucket named bucket.
func (q *Queue) State(ctx context.Context, bucket string) (*State, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := q.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1,
		Storage: jetstream.FileStorage, Replicas: q.opts.Replicas, Description: "MicroFaaS shared state (mforch --queue)"})
	if err != nil {
		return nil, fmt.Errorf("shared queue: bucket %s: %w", bucket, err)
	}
	return &State{q: q, kv: kv}, nil
}

// Put stores value under key, sealed.
func (s *State) Put(ctx context.Context, key string, value []byte) error {
	sealed, err := s.q.codec.Seal(value, key)
	if err != nil {
		return err
	}
	_, err = s.kv.Put(ctx, key, sealed)
	return err
}

// Get is key's value, opened, and its revision (nil and 0: no such key).
func (s *State) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	v, err := s.q.codec.Open(e.Value(), key)
	if err != nil {
		return nil, 0, fmt.Errorf("shared state %s: %w (is --queue-key the same on every instance?)", key, err)
	}
	return v, e.Revision(), nil
}

// Update stores value under key, sealed, only if key's revision is still
// rev (0: only if there is no key): openfaas.ErrConflict if not.
func (s *State) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	sealed, err := s.q.codec.Seal(value, key)
	if err != nil {
		return 0, err
	}
	var got uint64
	if rev == 0 {
		got, err = s.kv.Create(ctx, key, sealed)
	} else {
		got, err = s.kv.Update(ctx, key, sealed, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, fmt.Errorf("%w: %s is no longer at revision %d", openfaas.ErrConflict, key, rev)
	}
	return got, err
}

// Remove deletes key only if its revision is still rev:
// openfaas.ErrConflict if not.
func (s *State) Remove(ctx context.Context, key string, rev uint64) error {
	err := s.kv.Delete(ctx, key, jetstream.LastRevision(rev))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("%w: %s is no longer at revision %d", openfaas.ErrConflict, key, rev)
	}
	return err
}

// Delete removes key.
func (s *State) Delete(ctx context.Context, key string) error {
	err := s.kv.Delete(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// Watch calls fn with every key's value, then with every change (nil:
// deleted), from one goroutine, until stop. A value that does not open
// (another key file) is logged and skipped.
func (s *State) Watch(fn func(key string, value []byte)) (func(), error) {
	ctx, cancel := context.WithCancel(s.q.ctx)
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue // the end of the current values
				}
				if e.Operation() != jetstream.KeyValuePut {
					fn(e.Key(), nil)
					continue
				}
				v, err := s.q.codec.Open(e.Value(), e.Key())
				if err != nil {
					s.q.log.Error("shared state: a value does not open with this instance's --queue-key; skipped", "key", e.Key(), "err", err)
					continue
				}
				fn(e.Key(), v)
			}
		}
	}()
	return func() { cancel(); <-done }, nil
}
