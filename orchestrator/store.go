package orchestrator

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
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

// record is an invocation as stored (storecodec.go: binary, or JSON in a
// database an older mforch wrote). Fields are only ever added, so a
// database written by an older mforch still reads.
type record struct {
	ID         string             `json:"id"`
	Function   string             `json:"function"`
	Args       json.RawMessage    `json:"args,omitempty"`
	TimeoutNS  int64              `json:"timeout_ns"`
	Attempts   int                `json:"attempts"`
	Worker     string             `json:"worker,omitempty"`
	Boot       protocol.BootTimes `json:"boot"`
	LogBoot    int                `json:"log_boot,omitempty"`
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
	// Secrets travel with a pending invocation (it may run after a
	// restart), sealed under the store's key (SealedSecrets); a finished
	// record drops them. bbolt never scrubs the page a record leaves, so
	// only sealed bytes may ever reach the file. Secrets in clear are
	// read from databases an older mforch wrote, never written.
	Secrets       map[string][]byte `json:"secrets,omitempty"`
	SealedSecrets []byte            `json:"sealed_secrets,omitempty"`
	// Run-time deployed functions (issue 17); absent in older records.
	// The request's headers can carry a caller's credentials
	// (Authorization, cookies): while pending they are sealed like the
	// secrets (SealedHeader), and a finished record drops them.
	HTTP         *protocol.HTTPRequest  `json:"http,omitempty"`
	SealedHeader []byte                 `json:"sealed_header,omitempty"`
	HTTPResponse *protocol.HTTPResponse `json:"http_response,omitempty"`
	Log          string                 `json:"log,omitempty"`
}

func toRecord(inv *Invocation) record {
	return record{ID: inv.ID, Function: inv.Function, Args: inv.Args, TimeoutNS: int64(inv.Timeout),
		Attempts: inv.Attempts, Worker: inv.Worker, Boot: inv.Boot, LogBoot: inv.LogBoot, Queued: inv.Queued, PoweredOn: inv.PoweredOn,
		Connected: inv.Connected, Started: inv.Started, Finished: inv.Finished, PoweredOff: inv.PoweredOff,
		Result: inv.Result, Err: ErrText(inv.Err), ErrKind: kindName(inv.Err), TimedOut: inv.TimedOut,
		ExecMS: inv.ExecMS, Restarts: inv.Restarts, Env: inv.Env, Secrets: inv.Secrets,
		HTTP: inv.HTTP, HTTPResponse: inv.HTTPResponse, Log: inv.Log}
}

func (r record) invocation() *Invocation {
	inv := &Invocation{ID: r.ID, Function: r.Function, Args: r.Args, Timeout: time.Duration(r.TimeoutNS),
		Attempts: r.Attempts, Worker: r.Worker, Boot: r.Boot, LogBoot: r.LogBoot, Queued: r.Queued, PoweredOn: r.PoweredOn,
		Connected: r.Connected, Started: r.Started, Finished: r.Finished, PoweredOff: r.PoweredOff, Result: r.Result,
		TimedOut: r.TimedOut, ExecMS: r.ExecMS, Restarts: r.Restarts, Env: r.Env, Secrets: r.Secrets,
		HTTP: r.HTTP, HTTPResponse: r.HTTPResponse, Log: r.Log, done: make(chan struct{})}
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
	// bucketCorrupt keeps records that no longer decode, set aside with
	// a log line rather than stopping mforch's start.
	bucketCorrupt = []byte("corrupt")
)

// Retention bounds the finished records a BoltStore keeps: the newest Max
// (0: no bound), none finished longer than MaxAge ago (0: no bound).
type Retention struct {
	Max    int
	MaxAge time.Duration
}

// DefaultRetention keeps the last 100,000 finished invocations, for 30 days.
var DefaultRetention = Retention{Max: 100_000, MaxAge: 30 * 24 * time.Hour}

// pruneBatch bounds the records one commit deletes, so pruning a large
// backlog never makes one transaction (and the loop's wait) long.
const pruneBatch = 256

// BoltStore is a Store in a bbolt database file. Each Commit is one frame
// of its write-ahead log, fdatasynced before it returns, however many
// writes it holds; the log is copied into bbolt in the background
// (storelog.go).
type BoltStore struct {
	db        *bolt.DB
	aead      cipher.AEAD // seals pending secrets (the store key)
	retention Retention
	log       *slog.Logger
	now       func() time.Time
	finished  int       // records in the finished bucket (only this process writes it)
	wal       *storeLog // nil: commits go straight into bbolt (BoltOptions.NoLog)
}

// BoltOptions tune OpenBoltStore.
type BoltOptions struct {
	Retention Retention // zero: DefaultRetention
	Log       *slog.Logger
	Now       func() time.Time // for tests; time.Now
	// KeyFile holds the key pending secrets are sealed with (default:
	// the database path + ".key"); made, mode 0600, when missing.
	KeyFile string
	// NoLog commits each group straight into bbolt instead of through
	// the write-ahead log (storelog.go): slower, for comparison.
	NoLog bool
	// PlainSync makes the log call fdatasync(2) in the committer's
	// thread instead of through io_uring (orchestrator/wal/ring.go).
	PlainSync bool
}

// ErrStoreKey means the store's key file cannot be used.
var ErrStoreKey = errors.New("queue database key file unusable")

// storeKey reads the store's key from path, or makes one there (0600,
// never overwriting). A key file others can read is refused: it opens
// every pending secret in the database.
func storeKey(path string) (cipher.AEAD, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		rand.Read(key)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrStoreKey, err)
		}
		_, err = f.Write([]byte(hex.EncodeToString(key) + "\n"))
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("%w: writing %s: %v", ErrStoreKey, path, err)
		}
		b = []byte(hex.EncodeToString(key))
	} else if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStoreKey, err)
	} else if fi, err := os.Stat(path); err != nil || fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s is readable by others (mode %v): chmod 600 %s", ErrStoreKey, path, fi.Mode().Perm(), path)
	}
	key, err := hex.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("%w: %s does not hold 32 bytes of hex: move it away only if no invocation is pending (their secrets are lost with it)", ErrStoreKey, path)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encrypts rec's secrets into SealedSecrets and its HTTP request's
// headers into SealedHeader (AES-256-GCM, random nonce, the invocation id
// and the field as associated data so a sealed blob cannot be moved to
// another record or field) and clears the clear ones.
func (s *BoltStore) seal(rec *record) error {
	if len(rec.Secrets) > 0 {
		plain, err := json.Marshal(rec.Secrets)
		if err != nil {
			return err
		}
		if rec.SealedSecrets, err = s.sealBytes(plain, rec.ID); err != nil {
			return err
		}
	}
	rec.Secrets = nil
	if rec.HTTP != nil && len(rec.HTTP.Header) > 0 {
		plain, err := json.Marshal(rec.HTTP.Header)
		if err != nil {
			return err
		}
		if rec.SealedHeader, err = s.sealBytes(plain, rec.ID+headerAD); err != nil {
			return err
		}
		rec.HTTP = withoutHeader(rec.HTTP)
	}
	return nil
}

// headerAD is added to the invocation id in a sealed header's associated
// data, so it cannot pass for sealed secrets.
const headerAD = "\x00header"

// sealBytes seals plain (then clears it) with associated data ad:
// nonce || ciphertext.
func (s *BoltStore) sealBytes(plain []byte, ad string) ([]byte, error) {
	defer clear(plain)
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, plain, []byte(ad)), nil
}

// openBytes opens what sealBytes sealed with ad.
func (s *BoltStore) openBytes(sealed []byte, ad string) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, ErrSecretsSealed
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(ad))
	if err != nil {
		return nil, ErrSecretsSealed
	}
	return plain, nil
}

// withoutHeader is a copy of r without its headers (r is the live
// invocation's: never changed here).
func withoutHeader(r *protocol.HTTPRequest) *protocol.HTTPRequest {
	c := *r
	c.Header = nil
	return &c
}

// ErrSecretsSealed means a record's secrets do not open with the store's
// key (its key file was lost or replaced).
var ErrSecretsSealed = errors.New("pending secrets do not open with the store's key file (lost or replaced?)")

// open decodes a stored record and opens its sealed secrets.
func (s *BoltStore) open(v []byte) (record, error) {
	r, err := decodeRecord(v)
	if err != nil {
		return r, err
	}
	if len(r.SealedSecrets) > 0 {
		plain, err := s.openBytes(r.SealedSecrets, r.ID)
		if err != nil {
			return r, err
		}
		err = json.Unmarshal(plain, &r.Secrets)
		clear(plain)
		if err != nil {
			return r, err
		}
		r.SealedSecrets = nil
	}
	if len(r.SealedHeader) > 0 {
		plain, err := s.openBytes(r.SealedHeader, r.ID+headerAD)
		if err != nil {
			return r, err
		}
		if r.HTTP == nil {
			r.HTTP = &protocol.HTTPRequest{}
		}
		err = json.Unmarshal(plain, &r.HTTP.Header)
		clear(plain)
		if err != nil {
			return r, err
		}
		r.SealedHeader = nil
	}
	return r, nil
}

// secretFields match the secrets of a JSON record in a database file's raw
// bytes, in clear (an older mforch) or sealed.
var secretFields = regexp.MustCompile(`"secrets":\{[^{}]*\}|"sealed_(secrets|header)":"[A-Za-z0-9+/=]*"`)

// blankSealed overwrites, in place, every sealed blob of a binary record
// in b (sealMark, a uvarint length, the bytes) with '*'. Bytes that only
// look like a mark are blanked too: harmless in a damaged copy.
func blankSealed(b []byte) {
	for i := 0; ; {
		j := bytes.Index(b[i:], sealMark)
		if j < 0 {
			return
		}
		i += j + len(sealMark)
		n, k := binary.Uvarint(b[i:])
		if k <= 0 {
			continue
		}
		i += k
		end := i + int(min(n, uint64(len(b)-i)))
		for ; i < end; i++ {
			b[i] = '*'
		}
	}
}

// setAside moves a damaged database file to aside: a copy, mode 0600,
// with every secret field's value overwritten (same length: page offsets
// stay for whoever studies the damage), then the original removed.
func setAside(path, aside string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	blankSealed(b)
	b = secretFields.ReplaceAllFunc(b, func(m []byte) []byte {
		out := bytes.Clone(m)
		value := bytes.Index(out, []byte(`":`)) + 2 // the value's opening { or "
		for i := value + 1; i < len(out)-1; i++ {
			out[i] = '*'
		}
		return out
	})
	f, err := os.OpenFile(aside, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(aside)
		return err
	}
	return os.Remove(path)
}

// ErrStoreDamaged marks a database file that failed its checks: mforch moved
// it aside (path.damaged-TIME) and started with an empty one.
var ErrStoreDamaged = errors.New("queue database damaged")

// OpenBoltStore opens (or creates) the database at path. Only one mforch may
// hold it: a second waits one second and fails. A damaged file (bad meta
// pages, a failed consistency check, or a panic while reading it) is moved
// aside with an error logged, and an empty database takes its place, so a
// damaged file never keeps mforch in a crash loop.
func OpenBoltStore(path string, opts ...BoltOptions) (*BoltStore, error) {
	var o BoltOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Retention == (Retention{}) {
		o.Retention = DefaultRetention
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.KeyFile == "" {
		o.KeyFile = path + ".key"
	}
	aead, err := storeKey(o.KeyFile)
	if err != nil {
		return nil, err
	}
	stamp := o.Now().UTC().Format("20060102T150405Z")
	db, err := openChecked(path)
	if errors.Is(err, ErrStoreDamaged) {
		aside := fmt.Sprintf("%s.damaged-%s", path, stamp)
		if rerr := setAside(path, aside); rerr != nil {
			return nil, fmt.Errorf("%w; moving it aside: %v (move or delete %s by hand)", err, rerr, path)
		}
		o.Log.Error("queue database damaged: moved it aside and started with an empty one; invocations pending in it are not run",
			"err", err, "moved_to", aside)
		db, err = openChecked(path)
	}
	if err != nil {
		return nil, err
	}
	s := &BoltStore{db: db, aead: aead, retention: o.Retention, log: o.Log, now: o.Now}
	db.View(func(tx *bolt.Tx) error {
		s.finished = tx.Bucket(bucketFinished).Stats().KeyN
		return nil
	})
	if !o.NoLog {
		if err := s.openLog(path, stamp, o.PlainSync); err != nil {
			db.Close()
			return nil, err
		}
	}
	return s, nil
}

// openChecked opens path, creates the buckets and checks every page; any
// sign of damage is ErrStoreDamaged.
func openChecked(path string) (db *bolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, fmt.Errorf("%w: %s: %v", ErrStoreDamaged, path, p)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		switch {
		case errors.Is(err, bolt.ErrTimeout):
			return nil, fmt.Errorf("queue database %s is in use by another mforch: stop it first", path)
		case errors.Is(err, bolt.ErrInvalid), errors.Is(err, bolt.ErrVersionMismatch), errors.Is(err, bolt.ErrChecksum):
			return nil, fmt.Errorf("%w: %s: %v", ErrStoreDamaged, path, err)
		}
		return nil, fmt.Errorf("queue database %s: %w", path, err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		for cerr := range tx.Check() {
			return cerr
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrStoreDamaged, path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketPending, bucketFinished, bucketCorrupt} {
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
	return db, nil
}

// entry is one store write as its bytes: the record under its key, in
// the pending or the finished set.
type entry struct {
	key      string
	val      []byte
	finished bool
}

// encode turns writes into entries: a pending record's secrets and
// request headers sealed, a finished record's dropped.
func (s *BoltStore) encode(writes []StoreWrite) ([]entry, error) {
	out := make([]entry, 0, len(writes))
	for _, w := range writes {
		rec := toRecord(w.Invocation)
		if !w.Finished {
			if err := s.seal(&rec); err != nil {
				return nil, err
			}
		} else {
			rec.Secrets = nil // done with: never kept at rest
			if rec.HTTP != nil {
				rec.HTTP = withoutHeader(rec.HTTP)
			}
		}
		b, err := encodeRecord(&rec)
		if err != nil {
			return nil, err
		}
		out = append(out, entry{rec.ID, b, w.Finished})
	}
	return out, nil
}

// Commit makes writes durable, all or none: in the write-ahead log (one
// fdatasync), or, without one, in one bbolt transaction.
func (s *BoltStore) Commit(writes []StoreWrite) error {
	entries, err := s.encode(writes)
	if err != nil {
		return err
	}
	if s.wal != nil {
		return s.logCommit(entries)
	}
	return s.apply(entries, pruneBatch)
}

// apply writes entries into bbolt in one transaction, in order, then
// prunes finished records past the retention (at most pruneMax).
func (s *BoltStore) apply(entries []entry, pruneMax int) error {
	count := s.finished
	err := s.db.Update(func(tx *bolt.Tx) error {
		count = s.finished
		pending, done := tx.Bucket(bucketPending), tx.Bucket(bucketFinished)
		finished := false
		for _, e := range entries {
			key := []byte(e.key)
			if !e.finished {
				if err := pending.Put(key, e.val); err != nil {
					return err
				}
				continue
			}
			if err := pending.Delete(key); err != nil {
				return err
			}
			if done.Get(key) == nil {
				count++
			}
			if err := done.Put(key, e.val); err != nil {
				return err
			}
			finished = true
		}
		if !finished {
			return nil
		}
		deleted, err := s.prune(tx, count, pruneMax)
		count -= deleted
		return err
	})
	if err == nil {
		s.finished = count // only once committed
	}
	return err
}

// prune deletes the oldest finished records (ids are time-ordered, so key
// order is age order) beyond the retention, at most max per call, and
// returns how many it deleted.
func (s *BoltStore) prune(tx *bolt.Tx, count, max int) (int, error) {
	excess := 0
	if s.retention.Max > 0 {
		excess = count - s.retention.Max
	}
	c := tx.Bucket(bucketFinished).Cursor()
	deleted := 0
	for ; deleted < max; deleted++ {
		k, v := c.First()
		if k == nil || (deleted >= excess && !s.expired(v)) {
			break
		}
		if err := c.Delete(); err != nil {
			return 0, err
		}
	}
	return deleted, nil
}

// expired reports whether a finished record is older than the retention
// allows (one that no longer decodes is expired too).
func (s *BoltStore) expired(v []byte) bool {
	if s.retention.MaxAge <= 0 {
		return false
	}
	r, err := decodeRecord(v)
	if err != nil {
		return true
	}
	return !r.Finished.IsZero() && s.now().Sub(r.Finished) > s.retention.MaxAge
}

// Pending returns the invocations accepted but not finished, oldest first.
// A record that no longer decodes is moved to the corrupt bucket with an
// error logged; the others still run.
func (s *BoltStore) Pending() ([]*Invocation, error) {
	logged := s.logSnapshot()
	var out []*Invocation
	err := s.db.Update(func(tx *bolt.Tx) error {
		type bad struct{ k, v []byte }
		var corrupt []bad
		err := tx.Bucket(bucketPending).ForEach(func(k, v []byte) error {
			r, err := s.open(v)
			if err != nil || r.ID == "" {
				corrupt = append(corrupt, bad{append([]byte(nil), k...), append([]byte(nil), v...)})
				s.log.Error("pending invocation record does not decode: set aside in the database's corrupt bucket, not run",
					"key", string(k), "err", err)
				return nil
			}
			out = append(out, r.invocation())
			return nil
		})
		if err != nil {
			return err
		}
		for _, c := range corrupt {
			if err := tx.Bucket(bucketCorrupt).Put(c.k, c.v); err != nil {
				return err
			}
			if err := tx.Bucket(bucketPending).Delete(c.k); err != nil {
				return err
			}
		}
		return nil
	})
	out = s.mergeLog(out, logged)
	sortByQueued(out)
	return out, err
}

// Get returns an invocation by id, pending or finished.
func (s *BoltStore) Get(id string) (*Invocation, bool, error) {
	if v, ok := s.logGet(id); ok {
		r, err := s.open(v)
		if err != nil {
			return nil, false, fmt.Errorf("invocation %s: %w", id, err)
		}
		return r.invocation(), true, nil
	}
	var inv *Invocation
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketFinished, bucketPending} {
			if v := tx.Bucket(b).Get([]byte(id)); v != nil {
				r, err := s.open(v)
				if err != nil {
					return fmt.Errorf("invocation %s: %w", id, err)
				}
				inv = r.invocation()
				return nil
			}
		}
		return nil
	})
	return inv, inv != nil, err
}

// Close copies what the log holds into the database and closes both. No
// Commit may run at the same time.
func (s *BoltStore) Close() error {
	var err error
	if s.wal != nil {
		err = s.flushLog()
		s.wal.close()
	}
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

func sortByQueued(invs []*Invocation) {
	for i := 1; i < len(invs); i++ {
		for j := i; j > 0 && invs[j].Queued.Before(invs[j-1].Queued); j-- {
			invs[j], invs[j-1] = invs[j-1], invs[j]
		}
	}
}
