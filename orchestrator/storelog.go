package orchestrator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/microfaas/microfaas/orchestrator/wal"
)

// A BoltStore's write-ahead log: each Commit appends its group of records
// to a log file as one frame, with one fdatasync, instead of committing a
// bbolt transaction (two fdatasyncs, and every page it touched rewritten).
// Records not yet in bbolt are kept in memory too (the overlay), where Get
// and Pending find them. When the active log holds logCheckpointBytes,
// the other log (empty: its records are in bbolt) takes over, and a
// goroutine copies the full one's records into bbolt in one transaction
// (a checkpoint): an invocation accepted and finished within one log is
// written to bbolt once, as finished. On open, both logs are replayed
// into bbolt, the older epoch first, and started over.
//
// Files: FILE.log0 and FILE.log1 beside the database FILE, mode 0600,
// logPrealloc bytes each (grown with zeros, so that an fdatasync does not
// have to journal the file's size). They hold records as bbolt does:
// pending secrets and request headers sealed under the store's key.

const (
	// 1 MiB rather than 4: at one core a checkpoint shares the P with
	// everything else, and a quarter of the records a time cut the
	// store's p99 at 256 and 1024 clients by a third to a half without
	// costing throughput (docs/performance.md).
	logCheckpointBytes = 1 << 20
	logPrealloc        = 4 << 20
)

// ErrStoreBroken means a checkpoint could not write the log's records
// into bbolt: nothing more is accepted until mforch restarts (the log
// cannot be started over). Everything acknowledged before is in the log
// or in the database. A failed append is not sticky: that commit fails
// and the next tries again.
var ErrStoreBroken = errors.New("queue database cannot be written: check the disk, then restart mforch (what was accepted is on disk and runs after the restart)")

type storeLog struct {
	logs   [2]*wal.Log
	active int   // the log Commit appends to; only the committer changes it
	full   int64 // a log this long is checkpointed (logCheckpointBytes)

	mu      sync.Mutex
	overlay map[string]logged // the newest write of each record not in bbolt yet
	ckpt    chan struct{}     // closed when the running checkpoint ends; nil if none runs
	broken  error
}

// logged is a record in a log, not yet in bbolt.
type logged struct {
	val      []byte
	finished bool
	epoch    uint64 // of the log that holds it
}

// logPaths are the log files of the database at path.
func logPaths(path string) [2]string {
	return [2]string{path + ".log0", path + ".log1"}
}

// openLog opens (or creates) the database's logs and replays them into
// bbolt. A log whose header is damaged is moved aside, logged.
func (s *BoltStore) openLog(path, stamp string, plainSync bool) error {
	l := &storeLog{overlay: map[string]logged{}, full: logCheckpointBytes}
	for i, p := range logPaths(path) {
		lg, err := wal.Open(p, wal.Options{Prealloc: logPrealloc, PlainSync: plainSync})
		if errors.Is(err, wal.ErrDamaged) {
			aside := p + ".damaged-" + stamp
			if rerr := os.Rename(p, aside); rerr != nil {
				err = fmt.Errorf("%w; moving it aside: %v (move or delete %s by hand)", err, rerr, p)
			} else {
				s.log.Error("queue database log damaged: moved it aside and started a new one; invocations accepted since the last checkpoint may be missing",
					"err", err, "moved_to", aside)
				lg, err = wal.Open(p, wal.Options{Prealloc: logPrealloc, PlainSync: plainSync})
			}
		}
		if err != nil {
			for _, o := range l.logs[:i] {
				o.Close()
			}
			return fmt.Errorf("queue database log: %w", err)
		}
		l.logs[i] = lg
	}
	s.log.Debug("queue database log", "sync", l.logs[0].Sync())
	older, newer := 0, 1
	if l.logs[1].Epoch() < l.logs[0].Epoch() {
		older, newer = 1, 0
	}
	var entries []entry
	for _, i := range []int{older, newer} {
		for _, f := range l.logs[i].Frames() {
			es, err := decodeFrame(f)
			if err != nil {
				s.log.Error("queue database log: a frame that checks does not decode; skipped", "file", logPaths(path)[i], "err", err)
				continue
			}
			entries = append(entries, es...)
		}
	}
	if len(entries) > 0 {
		if err := s.apply(entries, len(entries)+pruneBatch); err != nil {
			l.close()
			return fmt.Errorf("replaying the queue database's log into %s: %w", path, err)
		}
		s.log.Info("queue database: replayed its log (mforch stopped without closing it)", "writes", len(entries))
	}
	if err := l.restart(); err != nil {
		l.close()
		return fmt.Errorf("queue database log: %w", err)
	}
	s.wal = l
	return nil
}

// restart starts both logs over, empty, once their records are in bbolt.
func (l *storeLog) restart() error {
	e := max(l.logs[0].Epoch(), l.logs[1].Epoch()) + 1
	if err := l.logs[0].Reset(e); err != nil {
		return err
	}
	if err := l.logs[1].Reset(e + 1); err != nil {
		return err
	}
	l.active = 1
	return nil
}

func (l *storeLog) close() {
	for _, lg := range l.logs {
		lg.Close()
	}
}

func (l *storeLog) fail(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken == nil {
		l.broken = fmt.Errorf("%w: %v", ErrStoreBroken, err)
	}
	return l.broken
}

// logCommit appends entries to the active log as one frame, durable when
// it returns, and starts a checkpoint when the log is full.
func (s *BoltStore) logCommit(entries []entry) error {
	l := s.wal
	l.mu.Lock()
	broken := l.broken
	l.mu.Unlock()
	if broken != nil {
		return broken
	}
	lg := l.logs[l.active]
	if err := lg.Append(encodeFrame(entries)); err != nil {
		// Not acknowledged. The next commit writes its frame at the same
		// place: a torn frame never sits between two good ones.
		return fmt.Errorf("queue database log: %w", err)
	}
	l.mu.Lock()
	for _, e := range entries {
		l.overlay[e.key] = logged{e.val, e.finished, lg.Epoch()}
	}
	full := lg.Len() >= l.full && l.ckpt == nil
	l.mu.Unlock()
	if full {
		s.startCheckpoint()
	}
	return nil
}

// startCheckpoint hands appending over to the other log (its records are
// in bbolt) and copies the full one's into bbolt in the background.
func (s *BoltStore) startCheckpoint() {
	l := s.wal
	full, next := l.logs[l.active], l.logs[1-l.active]
	if err := next.Reset(full.Epoch() + 1); err != nil {
		// The full log stays active and grows; the next commit tries
		// again. Whatever header next now has, its frames are in bbolt.
		s.log.Error("queue database: starting the other log over failed; the full one goes on growing", "err", err)
		return
	}
	l.active = 1 - l.active
	done := make(chan struct{})
	l.mu.Lock()
	entries := l.entries(full.Epoch())
	l.ckpt = done
	l.mu.Unlock()
	go func() {
		defer close(done)
		s.checkpoint(entries, full.Epoch())
	}()
}

// entries are the overlay's records held by the log of epoch (every
// record if epoch is 0), in key order (ids are time-ordered: bbolt
// appends). l.mu is held.
func (l *storeLog) entries(epoch uint64) []entry {
	var out []entry
	for k, v := range l.overlay {
		if epoch == 0 || v.epoch == epoch {
			out = append(out, entry{k, v.val, v.finished})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// checkpoint writes entries (the records of the log of epoch) into bbolt
// and drops them from the overlay, unless written again since.
func (s *BoltStore) checkpoint(entries []entry, epoch uint64) {
	l := s.wal
	finished := 0
	for _, e := range entries {
		if e.finished {
			finished++
		}
	}
	err := s.apply(entries, finished+pruneBatch)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ckpt = nil
	if err != nil {
		if l.broken == nil {
			l.broken = fmt.Errorf("%w: checkpoint into bbolt: %v", ErrStoreBroken, err)
		}
		s.log.Error("queue database: copying the log into the database failed; nothing more is accepted", "err", err)
		return
	}
	for _, e := range entries {
		if v, ok := l.overlay[e.key]; ok && v.epoch == epoch {
			delete(l.overlay, e.key)
		}
	}
}

// flushLog waits for a running checkpoint, copies every record still in
// the logs into bbolt and starts both logs over. No Commit may run at the
// same time (Close, tests).
func (s *BoltStore) flushLog() error {
	l := s.wal
	if l == nil {
		return nil
	}
	l.mu.Lock()
	ch := l.ckpt
	l.mu.Unlock()
	if ch != nil {
		<-ch
	}
	l.mu.Lock()
	broken := l.broken
	entries := l.entries(0)
	l.mu.Unlock()
	if broken != nil {
		return broken
	}
	if len(entries) > 0 {
		if err := s.apply(entries, len(entries)+pruneBatch); err != nil {
			return l.fail(err)
		}
	}
	l.mu.Lock()
	clear(l.overlay)
	l.mu.Unlock()
	if err := l.restart(); err != nil {
		return l.fail(err)
	}
	return nil
}

// logGet finds a record in the overlay.
func (s *BoltStore) logGet(id string) ([]byte, bool) {
	if s.wal == nil {
		return nil, false
	}
	s.wal.mu.Lock()
	defer s.wal.mu.Unlock()
	v, ok := s.wal.overlay[id]
	return v.val, ok
}

// logSnapshot is every record in the logs, taken before Pending reads
// bbolt: a checkpoint in between then leaves a record in both, never in
// neither.
func (s *BoltStore) logSnapshot() []entry {
	if s.wal == nil {
		return nil
	}
	s.wal.mu.Lock()
	defer s.wal.mu.Unlock()
	return s.wal.entries(0)
}

// mergeLog merges the logs' records (newer) into pending, bbolt's pending
// set.
func (s *BoltStore) mergeLog(pending []*Invocation, entries []entry) []*Invocation {
	if len(entries) == 0 {
		return pending
	}
	inLog := make(map[string]bool, len(entries))
	for _, e := range entries {
		inLog[e.key] = true
	}
	out := pending[:0]
	for _, inv := range pending {
		if !inLog[inv.ID] {
			out = append(out, inv)
		}
	}
	for _, e := range entries {
		if e.finished {
			continue
		}
		r, err := s.open(e.val)
		if err != nil {
			s.log.Error("pending invocation record in the log does not decode: not run", "key", e.key, "err", err)
			continue
		}
		out = append(out, r.invocation())
	}
	return out
}

// A frame is its entries, each: a flag byte (1: finished), the key and
// the record, each a uvarint length and the bytes.
func encodeFrame(entries []entry) []byte {
	n := 0
	for _, e := range entries {
		n += 1 + 2*binary.MaxVarintLen32 + len(e.key) + len(e.val)
	}
	b := make([]byte, 0, n)
	for _, e := range entries {
		flag := byte(0)
		if e.finished {
			flag = 1
		}
		b = append(b, flag)
		b = binary.AppendUvarint(b, uint64(len(e.key)))
		b = append(b, e.key...)
		b = binary.AppendUvarint(b, uint64(len(e.val)))
		b = append(b, e.val...)
	}
	return b
}

var errFrame = errors.New("log frame does not decode")

// decodeFrame reads a frame with the records' decoder (storecodec.go).
func decodeFrame(b []byte) ([]entry, error) {
	d := &decoder{b: b}
	var out []entry
	for d.err == nil && d.i < len(d.b) {
		flag := d.byte()
		key, val := d.string(), d.bytes()
		if d.err == nil && (flag > 1 || key == "" || len(val) == 0) {
			d.fail(fmt.Sprintf("entry with flag %d, key %q, %d record bytes", flag, key, len(val)))
		}
		out = append(out, entry{key, val, flag == 1})
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %w", errFrame, d.err)
	}
	return out, nil
}
