package orchestrator

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/microfaas/microfaas/protocol"
)

// An invocation record in the store is either JSON (every mforch before
// the binary format; its first byte is '{') or binary, its first byte the
// format's version. Records are written binary and read in both forms, so
// a database an older mforch wrote opens as it is; each record is
// rewritten binary when its invocation next changes. An older mforch
// cannot read the binary records (it sets pending ones aside as corrupt).
//
// Version 1, after the version byte, in this order:
//
//	flags      byte: recTimedOut, recBoot, recExec, recSealedSecrets,
//	           recHTTP, recSealedHeader, recHTTPResponse
//	times      byte: bit i set when time i of Queued, PoweredOn,
//	           Connected, Started, Finished, PoweredOff is not zero
//	ID, Function, Worker        strings
//	Args                         bytes
//	TimeoutNS, Attempts, LogBoot, Restarts   varints
//	Boot (4 float64), if recBoot; ExecMS (float64), if recExec
//	each time present: seconds (varint), nanoseconds (uvarint)
//	Result                       bytes
//	Err, ErrKind                 strings
//	Env                          map (count, then key and value strings)
//	SealedSecrets, if recSealedSecrets: sealed
//	HTTP, if recHTTP: Method, Path, Query strings, Header, Body bytes
//	SealedHeader, if recSealedHeader: sealed
//	HTTPResponse, if recHTTPResponse: Status varint, Header, Body bytes
//	Log                          string
//
// A string or bytes is a uvarint length then the bytes; a float64 is 8
// bytes little-endian; a header is a count, then for each key its string,
// a count and the value strings. A sealed blob is sealMark, a uvarint
// length and the bytes: the mark lets setAside find and blank sealed
// blobs in a damaged file without decoding it. Nothing follows Log: a
// later version adds fields after it under a new version byte.
const recordV1 = 1

const (
	recTimedOut = 1 << iota
	recBoot
	recExec
	recSealedSecrets
	recHTTP
	recSealedHeader
	recHTTPResponse
)

// sealMark precedes every sealed blob in a binary record.
var sealMark = []byte("mfSEAL")

// ErrRecordFormat means a stored invocation record does not decode.
var ErrRecordFormat = errors.New("invocation record does not decode")

// encodeRecord returns rec in the current binary format. Secrets must be
// sealed already (seal): it refuses to write them in clear.
func encodeRecord(rec *record) ([]byte, error) {
	if len(rec.Secrets) > 0 {
		return nil, errors.New("store: refusing to write an invocation's secrets in clear (seal them first)")
	}
	var flags, times byte
	if rec.TimedOut {
		flags |= recTimedOut
	}
	if rec.Boot != (protocol.BootTimes{}) {
		flags |= recBoot
	}
	if rec.ExecMS != 0 {
		flags |= recExec
	}
	if len(rec.SealedSecrets) > 0 {
		flags |= recSealedSecrets
	}
	if rec.HTTP != nil {
		flags |= recHTTP
	}
	if len(rec.SealedHeader) > 0 {
		flags |= recSealedHeader
	}
	if rec.HTTPResponse != nil {
		flags |= recHTTPResponse
	}
	ts := rec.times()
	for i, t := range ts {
		if !t.IsZero() {
			times |= 1 << i
		}
	}
	n := 64 + len(rec.ID) + len(rec.Function) + len(rec.Worker) + len(rec.Args) + len(rec.Result) +
		len(rec.Err) + len(rec.Log) + len(rec.SealedSecrets) + len(rec.SealedHeader)
	b := make([]byte, 0, n)
	b = append(b, recordV1, flags, times)
	b = appendString(b, rec.ID)
	b = appendString(b, rec.Function)
	b = appendString(b, rec.Worker)
	b = appendBytes(b, rec.Args)
	b = binary.AppendVarint(b, rec.TimeoutNS)
	b = binary.AppendVarint(b, int64(rec.Attempts))
	b = binary.AppendVarint(b, int64(rec.LogBoot))
	b = binary.AppendVarint(b, int64(rec.Restarts))
	if flags&recBoot != 0 {
		for _, f := range []float64{rec.Boot.InitMS, rec.Boot.NetworkMS, rec.Boot.ConnectedMS, rec.Boot.RestoredMS} {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
		}
	}
	if flags&recExec != 0 {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(rec.ExecMS))
	}
	for _, t := range ts {
		if !t.IsZero() {
			b = binary.AppendVarint(b, t.Unix())
			b = binary.AppendUvarint(b, uint64(t.Nanosecond()))
		}
	}
	b = appendBytes(b, rec.Result)
	b = appendString(b, rec.Err)
	b = appendString(b, rec.ErrKind)
	b = binary.AppendUvarint(b, uint64(len(rec.Env)))
	for _, k := range sortedKeys(rec.Env) {
		b = appendString(b, k)
		b = appendString(b, rec.Env[k])
	}
	if flags&recSealedSecrets != 0 {
		b = appendSealed(b, rec.SealedSecrets)
	}
	if flags&recHTTP != 0 {
		b = appendString(b, rec.HTTP.Method)
		b = appendString(b, rec.HTTP.Path)
		b = appendString(b, rec.HTTP.Query)
		b = appendHeader(b, rec.HTTP.Header)
		b = appendBytes(b, rec.HTTP.Body)
	}
	if flags&recSealedHeader != 0 {
		b = appendSealed(b, rec.SealedHeader)
	}
	if flags&recHTTPResponse != 0 {
		b = binary.AppendVarint(b, int64(rec.HTTPResponse.Status))
		b = appendHeader(b, rec.HTTPResponse.Header)
		b = appendBytes(b, rec.HTTPResponse.Body)
	}
	b = appendString(b, rec.Log)
	return b, nil
}

// times are the record's timestamps in the format's order.
func (r *record) times() [6]time.Time {
	return [6]time.Time{r.Queued, r.PoweredOn, r.Connected, r.Started, r.Finished, r.PoweredOff}
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendSealed(b, v []byte) []byte {
	return appendBytes(append(b, sealMark...), v)
}

func appendHeader(b []byte, h map[string][]string) []byte {
	b = binary.AppendUvarint(b, uint64(len(h)))
	for _, k := range sortedKeys(h) {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(h[k])))
		for _, v := range h[k] {
			b = appendString(b, v)
		}
	}
	return b
}

func sortedKeys[V any](m map[string]V) []string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// decodeRecord reads a stored record, JSON or binary. Sealed fields stay
// sealed (BoltStore.open opens them). Anything it cannot read is an
// ErrRecordFormat that says where; it never panics.
func decodeRecord(v []byte) (record, error) {
	var r record
	switch {
	case len(v) == 0:
		return r, fmt.Errorf("%w: empty", ErrRecordFormat)
	case v[0] == '{':
		if err := json.Unmarshal(v, &r); err != nil {
			return record{}, fmt.Errorf("%w: JSON: %v", ErrRecordFormat, err)
		}
		return r, nil
	case v[0] == recordV1:
		d := decoder{b: v, i: 1}
		d.v1(&r)
		if d.err != nil {
			return record{}, d.err
		}
		return r, nil
	}
	return r, fmt.Errorf("%w: format version %d is not one this mforch reads (written by a newer mforch? run that one on this database)", ErrRecordFormat, v[0])
}

// decoder reads a binary record; the first failure sticks in err and
// every later read returns zero values.
type decoder struct {
	b   []byte
	i   int
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at byte %d of %d", ErrRecordFormat, what, d.i, len(d.b))
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || d.i >= len(d.b) {
		d.fail("ends early")
		return 0
	}
	d.i++
	return d.b[d.i-1]
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b[d.i:])
	if n <= 0 {
		d.fail("bad unsigned number")
		return 0
	}
	d.i += n
	return x
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Varint(d.b[d.i:])
	if n <= 0 {
		d.fail("bad number")
		return 0
	}
	d.i += n
	return x
}

// int is a varint that must fit an int.
func (d *decoder) int() int {
	x := d.varint()
	if x != int64(int(x)) {
		d.fail("number out of range")
		return 0
	}
	return int(x)
}

// count is a uvarint count of items each at least min bytes long, so a
// corrupt count cannot make the decoder allocate more than the record.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)-d.i)/uint64(min) {
		d.fail("count larger than the record")
		return 0
	}
	return int(n)
}

// bytes returns the next length-prefixed bytes (a copy: bbolt's are only
// valid in their transaction), nil if empty.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.i) {
		d.fail("length past the end")
		return nil
	}
	if n == 0 {
		return nil
	}
	out := bytes.Clone(d.b[d.i : d.i+int(n)])
	d.i += int(n)
	return out
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)-d.i) {
		d.fail("length past the end")
		return ""
	}
	s := string(d.b[d.i : d.i+int(n)])
	d.i += int(n)
	return s
}

func (d *decoder) float() float64 {
	if d.err != nil || len(d.b)-d.i < 8 {
		d.fail("ends early")
		return 0
	}
	f := math.Float64frombits(binary.LittleEndian.Uint64(d.b[d.i:]))
	d.i += 8
	return f
}

func (d *decoder) time() time.Time {
	sec, nsec := d.varint(), d.uvarint()
	if d.err != nil {
		return time.Time{}
	}
	if nsec >= 1e9 {
		d.fail("bad time")
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec))
}

func (d *decoder) sealed() []byte {
	if d.err != nil {
		return nil
	}
	if !bytes.HasPrefix(d.b[d.i:], sealMark) {
		d.fail("sealed field without its mark")
		return nil
	}
	d.i += len(sealMark)
	b := d.bytes()
	if b == nil {
		d.fail("empty sealed field")
	}
	return b
}

func (d *decoder) header() map[string][]string {
	n := d.count(2) // a key and a count, at least a byte each
	if n == 0 {
		return nil
	}
	h := make(map[string][]string, n)
	for range n {
		k := d.string()
		vals := make([]string, d.count(1))
		for j := range vals {
			vals[j] = d.string()
		}
		h[k] = vals
	}
	return h
}

func (d *decoder) v1(r *record) {
	flags, times := d.byte(), d.byte()
	if flags >= recHTTPResponse<<1 || times >= 1<<6 {
		d.fail("unknown flags")
		return
	}
	r.TimedOut = flags&recTimedOut != 0
	r.ID, r.Function, r.Worker = d.string(), d.string(), d.string()
	r.Args = d.bytes()
	r.TimeoutNS, r.Attempts, r.LogBoot, r.Restarts = d.varint(), d.int(), d.int(), d.int()
	if flags&recBoot != 0 {
		r.Boot = protocol.BootTimes{InitMS: d.float(), NetworkMS: d.float(), ConnectedMS: d.float(), RestoredMS: d.float()}
	}
	if flags&recExec != 0 {
		r.ExecMS = d.float()
	}
	for i, t := range []*time.Time{&r.Queued, &r.PoweredOn, &r.Connected, &r.Started, &r.Finished, &r.PoweredOff} {
		if times&(1<<i) != 0 {
			*t = d.time()
		}
	}
	r.Result = d.bytes()
	r.Err, r.ErrKind = d.string(), d.string()
	if n := d.count(2); n > 0 {
		r.Env = make(map[string]string, n)
		for range n {
			k := d.string()
			r.Env[k] = d.string()
		}
	}
	if flags&recSealedSecrets != 0 {
		r.SealedSecrets = d.sealed()
	}
	if flags&recHTTP != 0 {
		r.HTTP = &protocol.HTTPRequest{Method: d.string(), Path: d.string(), Query: d.string(), Header: d.header(), Body: d.bytes()}
	}
	if flags&recSealedHeader != 0 {
		r.SealedHeader = d.sealed()
	}
	if flags&recHTTPResponse != 0 {
		r.HTTPResponse = &protocol.HTTPResponse{Status: d.int(), Header: d.header(), Body: d.bytes()}
	}
	r.Log = d.string()
	if d.err == nil && d.i != len(d.b) {
		d.fail("trailing bytes")
	}
}
