package orchestrator

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/microfaas/microfaas/protocol"
)

// fullRecord has every field set, so a field the codec drops shows.
func fullRecord() record {
	at := time.Date(2026, 12, 4, 12, 0, 0, 123456789, time.UTC)
	return record{ID: "019ae9b2c3d4aabbccddeeff00112233", Function: "resize", Args: json.RawMessage(`{"w":64}`),
		TimeoutNS: int64(30 * time.Second), Attempts: 2, Worker: "vm3", LogBoot: 7, Restarts: 1,
		Boot:   protocol.BootTimes{InitMS: 81.5, NetworkMS: 95.25, ConnectedMS: 120.125, RestoredMS: 3},
		Queued: at, PoweredOn: at.Add(time.Millisecond), Connected: at.Add(2 * time.Millisecond), Started: at.Add(3 * time.Millisecond),
		Finished: at.Add(time.Second), PoweredOff: at.Add(2 * time.Second), Result: json.RawMessage(`"ok"`),
		Err: "job timed out", ErrKind: "timeout", TimedOut: true, ExecMS: 999.5, Env: map[string]string{"A": "1", "B": ""},
		SealedSecrets: []byte("sealed-secrets-bytes"), SealedHeader: []byte("sealed-header-bytes"),
		HTTP:         &protocol.HTTPRequest{Method: "POST", Path: "/x", Query: "a=1", Body: []byte("in")},
		HTTPResponse: &protocol.HTTPResponse{Status: 201, Header: map[string][]string{"X": {"1", "2"}, "Y": {}}, Body: []byte("out")},
		Log:          "tail\n"}
}

// TestRecordRoundTrip: every field comes back as written; a record with
// nothing optional set too.
func TestRecordRoundTrip(t *testing.T) {
	for name, rec := range map[string]record{
		"full":    fullRecord(),
		"minimal": {ID: "01", Function: "f", Queued: time.Unix(1, 0)},
		"epoch":   {ID: "02", Function: "f", Queued: time.Unix(0, 0), Started: time.Unix(-5, 7)},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := encodeRecord(&rec)
			if err != nil {
				t.Fatal(err)
			}
			if b[0] != recordV1 {
				t.Fatalf("version byte %d", b[0])
			}
			got, err := decodeRecord(b)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []*record{&rec, &got} { // compare instants, not locations
				p.Queued, p.PoweredOn, p.Connected = p.Queued.UTC(), p.PoweredOn.UTC(), p.Connected.UTC()
				p.Started, p.Finished, p.PoweredOff = p.Started.UTC(), p.Finished.UTC(), p.PoweredOff.UTC()
			}
			if name == "full" { // an empty value list reads back as none
				rec.HTTPResponse.Header["Y"] = []string{}
			}
			if !reflect.DeepEqual(got, rec) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, rec)
			}
		})
	}
	// A zero time stays zero (IsZero decides what is pending).
	got, _ := decodeRecord(mustEncode(t, &record{ID: "03"}))
	if !got.Queued.IsZero() || !got.Finished.IsZero() {
		t.Errorf("zero times came back as %v, %v", got.Queued, got.Finished)
	}
}

func mustEncode(t testing.TB, r *record) []byte {
	t.Helper()
	b, err := encodeRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRecordRefusesClearSecrets: the encoder never writes secrets in clear.
func TestRecordRefusesClearSecrets(t *testing.T) {
	if _, err := encodeRecord(&record{ID: "01", Secrets: map[string][]byte{"k": []byte("v")}}); err == nil {
		t.Fatal("secrets in clear were encoded")
	}
}

// TestRecordDecodeErrors: damaged records give ErrRecordFormat saying
// what is wrong, never a panic or a half-read record.
func TestRecordDecodeErrors(t *testing.T) {
	full := mustEncode(t, ptr(fullRecord()))
	tests := map[string]struct {
		in   []byte
		want string
	}{
		"empty":           {nil, "empty"},
		"newer version":   {[]byte{2, 0, 0}, "newer mforch"},
		"bad JSON":        {[]byte(`{"id": 17`), "JSON"},
		"truncated":       {full[:len(full)/2], "at byte"},
		"trailing":        {append(bytes.Clone(full), 0), "trailing bytes"},
		"unknown flags":   {[]byte{recordV1, 0x80, 0}, "unknown flags"},
		"huge length":     {[]byte{recordV1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, "length past the end"},
		"huge count":      {append(mustEncode(t, &record{ID: "x"})[:15], 0xff, 0xff, 0xff, 0xff, 0x0f), "count larger"},
		"seal mark":       {bytes.Replace(bytes.Clone(full), sealMark, []byte("xxxxxx"), 1), "without its mark"},
		"bad nanoseconds": {[]byte{recordV1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, "bad time"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := decodeRecord(tt.in)
			if !errors.Is(err, ErrRecordFormat) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want ErrRecordFormat saying %q", err, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// FuzzDecodeRecord: whatever the bytes, decodeRecord returns a record or
// an ErrRecordFormat, never panics; what it reads encodes back to a record
// that decodes the same.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range []record{fullRecord(), {ID: "01", Function: "f"}} {
		f.Add(mustEncode(f, &r))
	}
	f.Add([]byte(`{"id":"p1","function":"f","attempts":1,"queued":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte{recordV1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrRecordFormat) {
				t.Fatalf("error not ErrRecordFormat: %v", err)
			}
			return
		}
		if len(r.Secrets) > 0 { // a JSON record an older mforch wrote
			return
		}
		again, err := encodeRecord(&r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := decodeRecord(again)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if again2 := mustEncode(t, &r2); !bytes.Equal(again, again2) {
			t.Fatalf("not stable:\n%x\n%x", again, again2)
		}
	})
}

// TestOpensDatabaseOfJSONRecords: a database the JSON-writing mforch
// left (records written the way it wrote them: json.Marshal of a sealed
// record) opens; its pending invocations run with their secrets and
// headers, its finished ones are found, and what this mforch writes next
// is binary beside them.
func TestOpensDatabaseOfJSONRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	pending := &Invocation{ID: "0190000000010000000000000001", Function: "f", Args: json.RawMessage(`{"n":1}`), Timeout: time.Minute,
		Attempts: 1, Queued: at, Started: at.Add(time.Second), Secrets: map[string][]byte{"token": []byte("s3cr3t")},
		HTTP: &protocol.HTTPRequest{Method: "GET", Path: "/p", Header: map[string][]string{"Authorization": {"Bearer t"}}}}
	finished := &Invocation{ID: "0190000000000000000000000002", Function: "f", Attempts: 1, Queued: at, Finished: at.Add(time.Second),
		Result: json.RawMessage(`42`), Err: newError(ErrTimeout, "too slow"), TimedOut: true}
	err = s.db.Update(func(tx *bolt.Tx) error { // the JSON path, as main wrote it
		rec := toRecord(pending)
		if err := s.seal(&rec); err != nil {
			return err
		}
		b, _ := json.Marshal(rec)
		if err := tx.Bucket(bucketPending).Put([]byte(rec.ID), b); err != nil {
			return err
		}
		b, _ = json.Marshal(toRecord(finished))
		return tx.Bucket(bucketFinished).Put([]byte(finished.ID), b)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	if s, err = OpenBoltStore(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Pending()
	if err != nil || len(got) != 1 {
		t.Fatalf("pending: %d, %v", len(got), err)
	}
	p := got[0]
	if p.ID != pending.ID || string(p.Args) != `{"n":1}` || p.Attempts != 1 || !p.Started.Equal(pending.Started) ||
		string(p.Secrets["token"]) != "s3cr3t" || p.HTTP.Header["Authorization"][0] != "Bearer t" {
		t.Fatalf("pending JSON record read back as %+v", p)
	}
	f, ok, err := s.Get(finished.ID)
	if err != nil || !ok || string(f.Result) != "42" || !errors.Is(f.Err, ErrTimeout) {
		t.Fatalf("finished JSON record: %+v %v %v", f, ok, err)
	}
	// Finishing the old pending invocation writes binary; both read back.
	p.Finished, p.Result = at.Add(time.Minute), json.RawMessage(`"done"`)
	if err := s.Commit([]StoreWrite{{Invocation: p, Finished: true}}); err != nil {
		t.Fatal(err)
	}
	if err := s.flushLog(); err != nil { // from the log into bbolt
		t.Fatal(err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketFinished).Get([]byte(p.ID)); len(v) == 0 || v[0] != recordV1 {
			t.Errorf("rewritten record is not binary: %q", v)
		}
		if v := tx.Bucket(bucketPending).Get([]byte(p.ID)); v != nil {
			t.Error("finished invocation still pending")
		}
		return nil
	})
	for id, want := range map[string]string{p.ID: `"done"`, finished.ID: "42"} {
		if inv, ok, err := s.Get(id); err != nil || !ok || string(inv.Result) != want {
			t.Errorf("%s: %v %v %v", id, inv, ok, err)
		}
	}
}
