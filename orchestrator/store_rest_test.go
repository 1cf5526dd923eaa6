package orchestrator

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/microfaas/microfaas/protocol"
)

// errorLog counts Error records and keeps their messages.
type errorLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *errorLog) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelError }
func (l *errorLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}
func (l *errorLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *errorLog) WithGroup(string) slog.Handler      { return l }
func (l *errorLog) count() int                         { l.mu.Lock(); defer l.mu.Unlock(); return len(l.msgs) }

func finishedInv(id string, at time.Time, secret string) *Invocation {
	return &Invocation{ID: id, Function: "f", Queued: at, Finished: at, Secrets: map[string][]byte{"token": []byte(secret)},
		Env: map[string]string{"A": "1"}, done: make(chan struct{})}
}

// TestFinishedRecordsDropSecrets: a pending record keeps its secrets (it
// may run after a restart); the finished one has none.
func TestFinishedRecordsDropSecrets(t *testing.T) {
	s, err := OpenBoltStore(filepath.Join(t.TempDir(), "q.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	inv := finishedInv("01", time.Now(), "s3cr3t")
	if err := s.Commit([]StoreWrite{{Invocation: inv}}); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.Get("01")
	if err != nil || string(got.Secrets["token"]) != "s3cr3t" {
		t.Fatalf("pending record: secrets %v, %v", got.Secrets, err)
	}
	if err := s.Commit([]StoreWrite{{Invocation: inv, Finished: true}}); err != nil {
		t.Fatal(err)
	}
	got, _, err = s.Get("01")
	if err != nil || got.Secrets != nil {
		t.Fatalf("finished record still holds secrets %v (%v)", got.Secrets, err)
	}
}

// countFinished counts the finished records in bbolt, once the log's
// are copied there (retention is applied then).
func countFinished(t *testing.T, s *BoltStore) int {
	if err := s.flushLog(); err != nil {
		t.Fatal(err)
	}
	n := 0
	s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketFinished).Stats().KeyN; return nil })
	return n
}

func TestRetention(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	path := filepath.Join(t.TempDir(), "q.db")
	s, err := OpenBoltStore(path, BoltOptions{Retention: Retention{Max: 3, MaxAge: time.Hour}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"01", "02", "03", "04", "05"} // time-ordered, as newID makes them
	for i, id := range ids {
		if err := s.Commit([]StoreWrite{{Invocation: finishedInv(id, now.Add(time.Duration(i)*time.Minute), ""), Finished: true}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := countFinished(t, s); n != 3 {
		t.Fatalf("%d finished records kept, want 3", n)
	}
	for _, id := range ids[:2] {
		if _, ok, _ := s.Get(id); ok {
			t.Errorf("the oldest record %s was kept", id)
		}
	}
	// Reopened, the count carries on; two hours later, age prunes the rest.
	s.Close()
	now = now.Add(2 * time.Hour)
	s, err = OpenBoltStore(path, BoltOptions{Retention: Retention{Max: 3, MaxAge: time.Hour}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Commit([]StoreWrite{{Invocation: finishedInv("06", now, ""), Finished: true}}); err != nil {
		t.Fatal(err)
	}
	if n := countFinished(t, s); n != 1 {
		t.Fatalf("%d finished records after they aged out, want 1 (the new one)", n)
	}
}

// TestCorruptPendingRecordSetAside: one record that no longer decodes does
// not stop the start; the others are recovered, it is kept aside, logged.
func TestCorruptPendingRecordSetAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	log := &errorLog{}
	s, err := OpenBoltStore(path, BoltOptions{Log: slog.New(log)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	good := finishedInv("02", time.Now(), "")
	if err := s.Commit([]StoreWrite{{Invocation: good}}); err != nil {
		t.Fatal(err)
	}
	s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPending).Put([]byte("01"), []byte(`{"id": "01", "queued": 17`))
	})
	pending, err := s.Pending()
	if err != nil {
		t.Fatalf("one corrupt record stopped recovery: %v", err)
	}
	if len(pending) != 1 || pending[0].ID != "02" {
		t.Fatalf("recovered %d invocations, want the good one", len(pending))
	}
	if log.count() != 1 {
		t.Errorf("%d error lines, want 1 for the corrupt record", log.count())
	}
	var aside []byte
	s.db.View(func(tx *bolt.Tx) error { aside = tx.Bucket(bucketCorrupt).Get([]byte("01")); return nil })
	if aside == nil {
		t.Error("the corrupt record was dropped, not set aside")
	}
}

// TestDamagedStoreMovedAside: a database file that is not one, or whose
// pages are damaged, is moved aside and reported; mforch starts with an
// empty queue instead of failing or panicking on every start.
func TestDamagedStoreMovedAside(t *testing.T) {
	damagedPage := func(t *testing.T, path string) {
		s, err := OpenBoltStore(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"01", "02", "03"} {
			s.Commit([]StoreWrite{{Invocation: finishedInv(id, time.Now(), strings.Repeat("x", 3000))}})
		}
		s.Close()
		b, _ := os.ReadFile(path)
		page := os.Getpagesize()
		for i := 2 * page; i < len(b); i++ { // keep the two meta pages, ruin the rest
			b[i] = 0xff
		}
		os.WriteFile(path, b, 0o600)
	}
	tests := []struct {
		name  string
		write func(t *testing.T, path string)
	}{
		{"not a database", func(t *testing.T, path string) { os.WriteFile(path, []byte(strings.Repeat("garbage", 2000)), 0o600) }},
		{"damaged pages", damagedPage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "q.db")
			tt.write(t, path)
			log := &errorLog{}
			s, err := OpenBoltStore(path, BoltOptions{Log: slog.New(log)})
			if err != nil {
				t.Fatalf("a damaged database stopped the start: %v", err)
			}
			defer s.Close()
			if pending, err := s.Pending(); err != nil || len(pending) != 0 {
				t.Errorf("the fresh queue has %d pending, %v", len(pending), err)
			}
			aside, _ := filepath.Glob(filepath.Join(dir, "q.db.damaged-*"))
			if len(aside) != 1 {
				t.Errorf("the damaged file was not moved aside: %v", aside)
			}
			if log.count() != 1 {
				t.Errorf("%d error lines, want 1", log.count())
			}
		})
	}
	// Not damage: a database in use is an error, and nothing is moved.
	path := filepath.Join(t.TempDir(), "q.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := OpenBoltStore(path, BoltOptions{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}); err == nil || errors.Is(err, ErrStoreDamaged) {
		t.Errorf("a database in use: %v", err)
	}
}

// storeFiles are the bytes of the database at path and of its logs
// (where a record is before a checkpoint).
func storeFiles(t *testing.T, path string) []byte {
	t.Helper()
	var all []byte
	logs := logPaths(path)
	for _, p := range append([]string{path}, logs[:]...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// TestSecretsNotInDatabaseFile: issue 18, attack 8. A secret never appears
// in the database file's bytes: not while its invocation is pending (it
// is sealed under the store's key, kept in its own 0600 file), and not in
// the page the finished invocation freed (bbolt does not scrub those).
func TestSecretsNotInDatabaseFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "q.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	const secret = "TENANT-SECRET-7d1e4c"
	inv := finishedInv("01", time.Now(), secret)
	inFile := func(when string) {
		t.Helper()
		b := storeFiles(t, path)
		for _, form := range []string{secret, base64.StdEncoding.EncodeToString([]byte(secret))} {
			if bytes.Contains(b, []byte(form)) {
				t.Errorf("%s: the database file holds the secret (%q)", when, form)
			}
		}
	}
	if err := s.Commit([]StoreWrite{{Invocation: inv}}); err != nil {
		t.Fatal(err)
	}
	inFile("pending")
	if err := s.Commit([]StoreWrite{{Invocation: inv, Finished: true}}); err != nil {
		t.Fatal(err)
	}
	inFile("finished")
	s.Close()
	if fi, err := os.Stat(path + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("store key file: %v, %v (want mode 0600)", fi, err)
	}

	// After a restart the pending secret is there again for its run.
	s, err = OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit([]StoreWrite{{Invocation: finishedInv("02", time.Now(), secret)}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	pending, err := s.Pending()
	if err != nil || len(pending) != 1 || string(pending[0].Secrets["token"]) != secret {
		t.Fatalf("after a restart: %d pending, %v", len(pending), err)
	}
	s.Close()

	// A key file others may read is refused, saying how to fix it.
	os.Chmod(path+".key", 0o644)
	if _, err := OpenBoltStore(path); !errors.Is(err, ErrStoreKey) {
		t.Errorf("a 0644 key file: %v, want ErrStoreKey", err)
	}
	os.Chmod(path+".key", 0o600)

	// Another key (the file lost and made again): the pending record
	// cannot be opened; it is set aside, not run without its secret.
	os.Remove(path + ".key")
	log := &errorLog{}
	s, err = OpenBoltStore(path, BoltOptions{Log: slog.New(log)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if pending, err := s.Pending(); err != nil || len(pending) != 0 || log.count() != 1 {
		t.Errorf("with another key: %d pending, %v, %d error lines (want 0, 1 set aside)", len(pending), err, log.count())
	}
}

// TestDamagedCopyPrivateWithoutSecrets: the copy of a damaged database
// mforch keeps is 0600 and has no secret in it, sealed or in clear (an
// older mforch kept them in clear).
func TestDamagedCopyPrivateWithoutSecrets(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "q.db")
	const secret = "TENANT-SECRET-0b9a"
	b64 := base64.StdEncoding.EncodeToString([]byte(secret))
	// Records as older mforchs wrote them (JSON, secrets in clear or
	// sealed) and one as now (binary, sealed), then garbage: not a
	// database any more.
	sealedBin := []byte("SEALED-BINARY-BLOB-9c1f")
	bin, err := encodeRecord(&record{ID: "03", Function: "binfn", SealedSecrets: sealedBin})
	if err != nil {
		t.Fatal(err)
	}
	raw := []byte(`{"id":"01","function":"f","secrets":{"token":"` + b64 + `"},"env":{"A":"1"}}` +
		`{"id":"02","function":"f","sealed_secrets":"QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"}` + string(bin) + strings.Repeat("garbage", 2000))
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := OpenBoltStore(path, BoltOptions{Log: slog.New(&errorLog{})})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	aside, _ := filepath.Glob(filepath.Join(dir, "q.db.damaged-*"))
	if len(aside) != 1 {
		t.Fatalf("damaged copies: %v", aside)
	}
	fi, err := os.Stat(aside[0])
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("damaged copy mode %v, %v: want 0600", fi.Mode().Perm(), err)
	}
	got, _ := os.ReadFile(aside[0])
	for _, leak := range []string{b64, "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY", string(sealedBin)} {
		if bytes.Contains(got, []byte(leak)) {
			t.Errorf("the damaged copy still holds %q", leak)
		}
	}
	if !bytes.Contains(got, []byte(`"env":{"A":"1"}`)) || !bytes.Contains(got, []byte("binfn")) || len(got) != len(raw) {
		t.Errorf("the damaged copy lost more than its secrets (%d bytes of %d)", len(got), len(raw))
	}
}

// TestRequestHeadersNotInDatabaseFile: a pending call's HTTP headers (a
// caller's Authorization) are sealed in the file and open again after a
// restart; a finished record keeps none.
func TestRequestHeadersNotInDatabaseFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	const token = "Bearer CALLER-TOKEN-5f2a91"
	header := map[string][]string{"Authorization": {token}, "Accept": {"*/*"}}
	inv := &Invocation{ID: "01", Function: "f", Queued: time.Now(), done: make(chan struct{}),
		HTTP: &protocol.HTTPRequest{Method: "POST", Path: "/x", Header: header, Body: []byte("body")}}
	notInFile := func(when string) {
		t.Helper()
		b := storeFiles(t, path)
		for _, form := range []string{"CALLER-TOKEN-5f2a91", base64.StdEncoding.EncodeToString([]byte(token))} {
			if bytes.Contains(b, []byte(form)) {
				t.Errorf("%s: the database file holds the caller's token (%q)", when, form)
			}
		}
	}
	if err := s.Commit([]StoreWrite{{Invocation: inv}}); err != nil {
		t.Fatal(err)
	}
	notInFile("pending")
	if inv.HTTP.Header["Authorization"][0] != token {
		t.Fatal("sealing changed the live invocation's headers")
	}
	s.Close()
	if s, err = OpenBoltStore(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pending, err := s.Pending()
	if err != nil || len(pending) != 1 || pending[0].HTTP == nil ||
		!reflect.DeepEqual(pending[0].HTTP.Header, header) || string(pending[0].HTTP.Body) != "body" || pending[0].HTTP.Path != "/x" {
		t.Fatalf("after a restart: %d pending, %v: %+v", len(pending), err, pending)
	}
	inv.Finished = time.Now()
	if err := s.Commit([]StoreWrite{{Invocation: inv, Finished: true}}); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.Get("01")
	if err != nil || got.HTTP == nil || got.HTTP.Header != nil || got.HTTP.Path != "/x" {
		t.Fatalf("finished record: %+v, %v (want the request without its headers)", got.HTTP, err)
	}
	notInFile("finished")
}
