package orchestrator

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/microfaas/microfaas/protocol"
)

// Store keeps accepted invocations on disk so none is lost when mforch
// stops or crashes: an invocation is written before Submit returns (the
// write-ahead record) and moved to the finished set when it ends. On start,
// every invocation still pending is queued again.
//
// The orchestrator's loop hands the store every write of one turn at once
// (group commit): Commit must make all of them durable, or none, before
// it returns.
type Store interface {
	Commit(writes []StoreWrite) error
	Pending() ([]*Invocation, error)
	Get(id string) (*Invocation, bool, error)
	Close() error
}

// StoreWrite is one invocation to persist: pending (accepted, or an
// attempt started), or finished (moved out of the pending set).
type StoreWrite struct {
	Invocation *Invocation
	Finished   bool
}

// record is an invocation as stored. Fields are only ever added, so a
// database written by an older mforch still reads.
type record struct {
	ID         string             `json:"id"`
	Function   string             `json:"function"`
	Args       json.RawMessage    `json:"args,omitempty"`
	TimeoutNS  int64              `json:"timeout_ns"`
	Attempts   int                `json:"attempts"`
	Worker     string             `json:"worker,omitempty"`
	Boot       protocol.BootTimes `json:"boot"`
	Queued     time.Time          `json:"queued"`
	PoweredOn  time.Time          `json:"powered_on,omitempty"`
	Connected  time.Time          `json:"connected,omitempty"`
	Started    time.Time          `json:"started,omitempty"`
	Finished   time.Time          `json:"finished,omitempty"`
	Result     json.RawMessage    `json:"result,omitempty"`
	PoweredOff time.Time          `json:"powered_off,omitempty"`
	Err        string             `json:"error,omitempty"`
	ErrKind    string             `json:"error_kind,omitempty"` // a key of errorKinds; absent in older records
	TimedOut   bool               `json:"timed_out,omitempty"`
	ExecMS     float64            `json:"exec_ms,omitempty"`
	Restarts   int                `json:"restarts,omitempty"`
	Env        map[string]string  `json:"env,omitempty"`
	Secrets    map[string][]byte  `json:"secrets,omitempty"` // in clear: protect the database file (mode 0600)
}

func toRecord(inv *Invocation) record {
	return record{ID: inv.ID, Function: inv.Function, Args: inv.Args, TimeoutNS: int64(inv.Timeout),
		Attempts: inv.Attempts, Worker: inv.Worker, Boot: inv.Boot, Queued: inv.Queued, PoweredOn: inv.PoweredOn,
		Connected: inv.Connected, Started: inv.Started, Finished: inv.Finished, PoweredOff: inv.PoweredOff,
		Result: inv.Result, Err: errString(inv.Err), ErrKind: kindName(inv.Err), TimedOut: inv.TimedOut,
		ExecMS: inv.ExecMS, Restarts: inv.Restarts, Env: inv.Env, Secrets: inv.Secrets}
}

func (r record) invocation() *Invocation {
	inv := &Invocation{ID: r.ID, Function: r.Function, Args: r.Args, Timeout: time.Duration(r.TimeoutNS),
		Attempts: r.Attempts, Worker: r.Worker, Boot: r.Boot, Queued: r.Queued, PoweredOn: r.PoweredOn,
		Connected: r.Connected, Started: r.Started, Finished: r.Finished, PoweredOff: r.PoweredOff, Result: r.Result,
		TimedOut: r.TimedOut, ExecMS: r.ExecMS, Restarts: r.Restarts, Env: r.Env, Secrets: r.Secrets,
		done: make(chan struct{})}
	if r.Err != "" {
		kind, ok := errorKinds[r.ErrKind]
		if !ok {
			// Written before outcomes were typed: a timeout is flagged, any
			// other error came from the function or from a lost worker.
			kind = ErrFunction
			if r.TimedOut {
				kind = ErrTimeout
			}
		}
		inv.Err = &Error{Kind: kind, Msg: r.Err}
	}
	if !r.Finished.IsZero() {
		close(inv.done)
	}
	return inv
}

var (
	bucketPending  = []byte("pending")
	bucketFinished = []byte("finished")
)

// BoltStore is a Store in a bbolt database file. Each Commit is one bbolt
// transaction, fsynced before it returns, however many writes it holds.
type BoltStore struct{ db *bolt.DB }

// OpenBoltStore opens (or creates) the database at path. Only one mforch may
// hold it: a second waits one second and fails.
func OpenBoltStore(path string) (*BoltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("queue database %s is in use by another mforch: stop it first", path)
		}
		return nil, fmt.Errorf("queue database %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketPending, bucketFinished} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("queue database %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

func put(tx *bolt.Tx, bucket []byte, inv *Invocation) error {
	b, err := json.Marshal(toRecord(inv))
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(inv.ID), b)
}

// Commit writes every invocation in one transaction, in order.
func (s *BoltStore) Commit(writes []StoreWrite) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, w := range writes {
			if !w.Finished {
				if err := put(tx, bucketPending, w.Invocation); err != nil {
					return err
				}
				continue
			}
			if err := tx.Bucket(bucketPending).Delete([]byte(w.Invocation.ID)); err != nil {
				return err
			}
			if err := put(tx, bucketFinished, w.Invocation); err != nil {
				return err
			}
		}
		return nil
	})
}

// Pending returns the invocations accepted but not finished, oldest first.
func (s *BoltStore) Pending() ([]*Invocation, error) {
	var out []*Invocation
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPending).ForEach(func(k, v []byte) error {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("pending invocation %s: %w", k, err)
			}
			out = append(out, r.invocation())
			return nil
		})
	})
	sortByQueued(out)
	return out, err
}

// Get returns an invocation by id, pending or finished.
func (s *BoltStore) Get(id string) (*Invocation, bool, error) {
	var inv *Invocation
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketFinished, bucketPending} {
			if v := tx.Bucket(b).Get([]byte(id)); v != nil {
				var r record
				if err := json.Unmarshal(v, &r); err != nil {
					return err
				}
				inv = r.invocation()
				return nil
			}
		}
		return nil
	})
	return inv, inv != nil, err
}

// Close closes the database.
func (s *BoltStore) Close() error { return s.db.Close() }

func sortByQueued(invs []*Invocation) {
	for i := 1; i < len(invs); i++ {
		for j := i; j > 0 && invs[j].Queued.Before(invs[j-1].Queued); j-- {
			invs[j], invs[j-1] = invs[j-1], invs[j]
		}
	}
}
