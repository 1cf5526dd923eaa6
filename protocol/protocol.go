// Package protocol is the MicroFaaS worker protocol, version 2: the messages a
// worker and the orchestrator exchange over one TCP connection, framed as one
// JSON object per line (a bundle chunk's line is followed by its raw bytes)
// and authenticated with the worker's own key (derived from the cluster
// secret and the worker's id).
//
// A session: the orchestrator sends a challenge nonce; the worker sends Hello
// (who it is, its boot timings, a fresh nonce), proving its key; the orchestrator answers with a Job or a Command; after each Job the
// worker sends a Result and the orchestrator sends the next Job or a Command
// (power off, reboot). docs/protocol.md is the specification.
package protocol

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
)

// Version is the protocol version a Hello carries: 2 adds per-worker keys
// and the orchestrator's challenge (docs/protocol.md). Version 1 remains
// only until every caller moves to ClientHandshake and ServerHandshake.
const Version = 2

// DefaultPort is the orchestrator's worker port, as in the original system.
const DefaultPort = 63302

// MaxFrame bounds one message, so a broken peer cannot make us buffer forever.
const MaxFrame = 16 << 20

// Message types.
const (
	TypeHello   = "hello"
	TypeJob     = "job"
	TypeResult  = "result"
	TypeCommand = "command"
	// TypeChallenge is the orchestrator's first frame in version 2: a fresh
	// nonce the worker's hello must be bound to.
	TypeChallenge = "challenge"
	// TypeBundleRequest (worker) asks for a run-time deployed function's
	// bundle, or its next part, after a Job named one the worker lacks;
	// TypeBundleChunk (orchestrator) answers with one part. See BundleRef.
	TypeBundleRequest = "bundle_request"
	TypeBundleChunk   = "bundle_chunk"
	// TypeLog (worker) carries a batch of the worker's own log lines (its
	// kernel's and mfinit's, never a function's output) at any time after
	// the hello, to an orchestrator whose challenge accepts FeatureLog.
	TypeLog = "log"
)

// FeatureLog, in a Challenge's Accepts, says the orchestrator takes log
// frames. A worker sends none to an orchestrator that does not say so (one
// built before them would end the session on the unknown frame).
const FeatureLog = "log"

// Log frames are bounded on both sides: a batch holds at most
// MaxLogBatch bytes of text in at most MaxLogLines lines of at most
// MaxLogLine bytes (longer lines are cut), far under MaxFrame.
const (
	MaxLogBatch = 16 << 10
	MaxLogLine  = 1 << 10
	MaxLogLines = 4096
)

// ErrLogBatch means a log frame was over its bounds: its worker is cut off.
var ErrLogBatch = errors.New("log frame over its bounds")

// Check returns ErrLogBatch (wrapped) if b is over the bounds.
func (b LogBatch) Check() error {
	size := 0
	for _, l := range b.Lines {
		if len(l.Text) > MaxLogLine {
			return fmt.Errorf("%w: a line of %d bytes (at most %d)", ErrLogBatch, len(l.Text), MaxLogLine)
		}
		size += len(l.Text)
	}
	switch {
	case len(b.Lines) > MaxLogLines:
		return fmt.Errorf("%w: %d lines (at most %d)", ErrLogBatch, len(b.Lines), MaxLogLines)
	case size > MaxLogBatch:
		return fmt.Errorf("%w: %d bytes of text (at most %d)", ErrLogBatch, size, MaxLogBatch)
	case b.Dropped < 0:
		return fmt.Errorf("%w: %d lines dropped", ErrLogBatch, b.Dropped)
	}
	return nil
}

// Sources of log lines.
const (
	LogKernel = "kernel" // the kernel's log (/dev/kmsg)
	LogMfinit = "mfinit" // the worker runtime's own log
)

// LogLine is one line of a worker's log.
type LogLine struct {
	Source string `json:"src"` // LogKernel or LogMfinit
	// UptimeMS is the kernel's timestamp of a kernel line (ms since boot);
	// mfinit lines carry their own time in their text.
	UptimeMS float64 `json:"t,omitempty"`
	Text     string  `json:"text"`
}

// LogBatch is the body of a log frame. Dropped counts the lines the
// worker dropped (its buffer full, or over its rate) since the previous
// batch, before these lines.
type LogBatch struct {
	Lines   []LogLine `json:"lines,omitempty"`
	Dropped int       `json:"dropped,omitempty"`
}

// BundleChunkSize is the most bundle bytes one TypeBundleChunk carries.
const BundleChunkSize = 1 << 20

// MaxLog bounds the function log (stderr, a watchdog's log) a Result
// carries: its last MaxLog bytes.
const MaxLog = 64 << 10

// Commands the orchestrator may give after a result (or instead of a job).
const (
	CmdPowerOff = "poweroff" // power the worker off
	CmdReboot   = "reboot"   // reboot; the worker comes back for more work
	CmdWait     = "wait"     // stay connected: another job follows
)

// ErrReplay means a frame came out of order or out of its session: a replay.
var ErrReplay = errors.New("frame replayed or out of order")

// ErrFrameTooLarge means a peer sent a frame over the limit (MaxHelloFrame
// before authentication, MaxFrame after).
var ErrFrameTooLarge = errors.New("frame too large")

// ErrBadMAC means a message was not signed with the cluster's secret: the
// peer does not have the secret, or the message was altered.
var ErrBadMAC = errors.New("message authentication failed: the peer does not hold the key (the cluster secret, or in version 2 this worker's key)")

// BootTimes are kernel uptimes (CLOCK_BOOTTIME) in milliseconds at the
// worker's milestones.
type BootTimes struct {
	InitMS      float64 `json:"init_ms"`      // PID 1 started
	NetworkMS   float64 `json:"network_ms"`   // interface up with its address
	ConnectedMS float64 `json:"connected_ms"` // TCP connection to the orchestrator open
	// RestoredMS is set by a worker restored from a snapshot (mf.snapshot):
	// its uptime when it got its identity. Its uptime continues from the
	// snapshot, so InitMS and NetworkMS are those of the snapshot's boot,
	// and ConnectedMS - RestoredMS is the time from restore to connect.
	RestoredMS float64 `json:"restored_ms,omitempty"`
}

// Hello is the worker's first message.
type Hello struct {
	Proto    int       `json:"proto"`
	WorkerID string    `json:"worker_id"`
	Nonce    string    `json:"nonce"` // 16 random bytes, hex; binds every MAC of this session
	Arch     string    `json:"arch"`
	Boot     BootTimes `json:"boot"`
	// Functions are the functions baked into the worker's image (built-in
	// and user functions) it can run with no bundle.
	Functions []string `json:"functions,omitempty"`
	// Bundles are the digests of run-time deployed bundles the worker holds
	// already (delivered with its initramfs, or in its cache), verified.
	Bundles []string `json:"bundles,omitempty"`
}

// BundleRef names the bundle of a function deployed at run time: one file
// (an uncompressed newc cpio: config.json and rootfs/, package bundle),
// named by the SHA-256 of its bytes. The digest arrives in an
// authenticated Job, so a worker that checks a bundle's bytes against it
// runs only what the orchestrator deployed, however the bytes reached it.
type BundleRef struct {
	Digest string `json:"digest"` // "sha256:" + 64 hex digits
	Size   int64  `json:"size"`
}

// BundleRequest asks for Size-Offset bytes of the bundle Digest from Offset
// (a worker resumes a partial fetch with a non-zero Offset).
type BundleRequest struct {
	Digest string `json:"digest"`
	Offset int64  `json:"offset"`
}

// BundleChunk is one part of a bundle: at most BundleChunkSize bytes from
// Offset. Error, if set, says why the orchestrator cannot send it (the
// worker fails the job with it).
//
// On the wire it is binary (Conn.SendBundleChunk, Conn.ReceiveBundleChunk):
// an authenticated frame whose body is this header with Length, then
// exactly Length raw bytes, Data, which no MAC covers: the worker checks
// the whole bundle against the digest of its authenticated Job instead
// (docs/protocol.md says why that is enough).
type BundleChunk struct {
	Digest string `json:"digest"`
	Offset int64  `json:"offset"`
	Length int    `json:"length,omitempty"` // len(Data); set by SendBundleChunk
	Error  string `json:"error,omitempty"`
	Data   []byte `json:"-"`
}

// HTTPRequest is a call forwarded unchanged to a function that serves HTTP
// (an OpenFaaS watchdog image): method, path and raw query as the caller
// sent them below /function/NAME, headers, and a body of any bytes.
type HTTPRequest struct {
	Method string              `json:"method"`
	Path   string              `json:"path,omitempty"`
	Query  string              `json:"query,omitempty"`
	Header map[string][]string `json:"header,omitempty"`
	Body   []byte              `json:"body,omitempty"`
}

// HTTPResponse is what such a function answered, returned to the caller
// unchanged.
type HTTPResponse struct {
	Status int                 `json:"status"`
	Header map[string][]string `json:"header,omitempty"`
	Body   []byte              `json:"body,omitempty"`
}

// Job asks the worker to run one function. Field names follow the original
// system (i_id, f_id, f_args) so its inputs run unchanged.
type Job struct {
	ID        string          `json:"i_id"`
	Function  string          `json:"f_id"`
	Args      json.RawMessage `json:"f_args,omitempty"`
	TimeoutMS int64           `json:"timeout_ms,omitempty"`
	Attempt   int             `json:"attempt,omitempty"`
	// Services gives the addresses and credentials of the services the
	// function may use (from the cluster file), so none is baked into images.
	Services map[string]map[string]string `json:"services,omitempty"`
	// Env is added to a user function's environment (OpenFaaS envVars).
	Env map[string]string `json:"env,omitempty"`
	// Secrets are written to the worker's secrets directory
	// (/var/openfaas/secrets/NAME, as OpenFaaS mounts them) for the job.
	Secrets map[string][]byte `json:"secrets,omitempty"`
	// NowUnixNS is the orchestrator's wall clock when it sent the job. A
	// worker has no clock of its own worth trusting (a microvm without an
	// RTC, a board after a power cut: both boot in 1970), and functions
	// need one: S3 rejects requests signed more than 15 minutes off.
	NowUnixNS int64 `json:"now_ns,omitempty"`
	// Bundle is set for a function deployed at run time: the worker runs
	// that bundle (after checking its digest), not a function of its image.
	Bundle *BundleRef `json:"bundle,omitempty"`
	// HTTP is set for a call to a function that serves HTTP (a watchdog
	// image); Args is then unused.
	HTTP *HTTPRequest `json:"http,omitempty"`
}

// Result is the worker's answer to a Job. Exactly one of Result and Error is
// set.
type Result struct {
	ID       string          `json:"i_id"`
	Function string          `json:"f_id"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	TimedOut bool            `json:"timed_out,omitempty"`
	ExecMS   float64         `json:"exec_time"`
	// HTTP is a watchdog function's response (status, headers, body); set
	// instead of Result when the Job carried HTTP.
	HTTP *HTTPResponse `json:"http,omitempty"`
	// Log is the tail (at most MaxLog bytes) of the function's stderr, or
	// of its watchdog's log, for this call.
	Log string `json:"log,omitempty"`
}

// Command tells the worker what to do next.
type Command struct {
	Action string `json:"action"`
}

// envelope is the wire frame: the body as raw JSON and a MAC over it.
type envelope struct {
	Type string          `json:"type"`
	Seq  uint64          `json:"seq"`
	Body json.RawMessage `json:"body"`
	MAC  string          `json:"mac"`
}

// NewNonce returns a fresh session nonce.
func NewNonce() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("session nonce: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// mac authenticates one frame: HMAC-SHA256(secret, "mfp1" | nonce | seq | type | body).
// The nonce is the worker's Hello nonce (empty for the Hello itself, whose body
// carries it), and seq counts frames in each direction, so a frame cannot be
// replayed into another session or reordered within one.
func mac(secret []byte, nonce string, seq uint64, typ string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("mfp1\x00"))
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], seq)
	m.Write(s[:])
	m.Write([]byte(typ))
	m.Write([]byte{0})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Conn reads and writes authenticated frames on one connection. Sends are
// safe for concurrent use (a worker's log shipper sends beside its jobs);
// receives are not.
type Conn struct {
	sendMu  sync.Mutex // one frame at a time, in sequence order
	rw      io.ReadWriter
	r       *bufio.Reader
	secret  []byte // version 1: the cluster secret; version 2: the worker's key
	nonce   string // version 1: the worker's hello nonce
	sendSeq uint64
	recvSeq uint64
	// Version 2 (ClientHandshake, ServerHandshake): frames are bound to
	// both nonces and to their direction.
	v2               bool
	session          string // orchestrator's challenge nonce + worker's hello nonce
	sendDir, recvDir string
	accepts          []string // the orchestrator's challenge's Accepts (client side)
}

// Accepts reports whether the orchestrator's challenge said it takes
// feature (FeatureLog). Only the worker's side of a session knows.
func (c *Conn) Accepts(feature string) bool { return slices.Contains(c.accepts, feature) }

// NewConn wraps rw for protocol version 1, with the cluster's shared secret.
//
// Deprecated: version 1 lets any worker, or any function that reads the
// secret, act as every worker. Use ClientHandshake and ServerHandshake.
func NewConn(rw io.ReadWriter, secret []byte) *Conn {
	return &Conn{rw: rw, r: bufio.NewReaderSize(rw, 64<<10), secret: secret}
}

// SetNonce binds the session to the worker's Hello nonce. The worker calls it
// before sending Hello; the orchestrator after receiving it.
func (c *Conn) SetNonce(n string) { c.nonce = n }

// frameMAC is the MAC of one frame of this session.
func (c *Conn) frameMAC(dir string, seq uint64, typ string, body []byte) string {
	if c.v2 {
		return macV2(c.secret, dir, c.session, seq, typ, body)
	}
	nonce := c.nonce
	if typ == TypeHello {
		nonce = ""
	}
	return mac(c.secret, nonce, seq, typ, body)
}

// Send writes one message of type typ. A bundle chunk (a BundleChunk, of
// type TypeBundleChunk) goes binary, as SendBundleChunk sends it.
func (c *Conn) Send(typ string, v any) error {
	if typ == TypeBundleChunk {
		ch, ok := v.(BundleChunk)
		if !ok {
			return fmt.Errorf("send %s: a %T, want a protocol.BundleChunk", typ, v)
		}
		return c.SendBundleChunk(ch)
	}
	return c.send(typ, v, nil)
}

// send writes one frame with body v, then raw (unauthenticated: only
// bundle chunks have any) in the same write where the connection allows.
func (c *Conn) send(typ string, v any, raw []byte) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", typ, err)
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	env := envelope{Type: typ, Seq: c.sendSeq, Body: body, MAC: c.frameMAC(c.sendDir, c.sendSeq, typ, body)}
	if err := writeFrame(c.rw, env, raw); err != nil {
		return err
	}
	c.sendSeq++
	return nil
}

func writeFrame(w io.Writer, env envelope, raw []byte) error {
	frame, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("encode %s frame: %w", env.Type, err)
	}
	frame = append(frame, '\n')
	// net.Buffers: one writev on a TCP connection, not two segments.
	bufs := net.Buffers{frame}
	if len(raw) > 0 {
		bufs = append(bufs, raw)
	}
	if _, err := bufs.WriteTo(w); err != nil {
		return fmt.Errorf("send %s: %w", env.Type, err)
	}
	return nil
}

// Receive reads one frame, checks its MAC and sequence number, and returns
// its type and body. In version 1 a Hello frame sets the session nonce from
// its body; in version 2 the hello belongs to the handshake and is refused
// here. A bundle chunk is refused (ErrBinaryFrame): its raw bytes would be
// left unread; ReceiveBundleChunk reads those.
func (c *Conn) Receive() (string, json.RawMessage, error) {
	typ, body, err := c.receive()
	if err == nil && typ == TypeBundleChunk {
		return typ, nil, fmt.Errorf("%s frame: %w", typ, ErrBinaryFrame)
	}
	return typ, body, err
}

// receive reads and checks one frame (Receive).
func (c *Conn) receive() (string, json.RawMessage, error) {
	line, err := readLine(c.r, MaxFrame)
	if err != nil {
		return "", nil, err
	}
	var env envelope
	if err := json.Unmarshal(line, &env); err != nil {
		return "", nil, fmt.Errorf("malformed frame: %w", err)
	}
	if c.v2 && (env.Type == TypeHello || env.Type == TypeChallenge) {
		return env.Type, nil, fmt.Errorf("%s frame inside a session: %w", env.Type, ErrReplay)
	}
	want := c.frameMAC(c.recvDir, env.Seq, env.Type, env.Body)
	if !hmac.Equal([]byte(want), []byte(env.MAC)) {
		return env.Type, nil, fmt.Errorf("%s frame: %w", env.Type, ErrBadMAC)
	}
	if env.Seq != c.recvSeq {
		return env.Type, nil, fmt.Errorf("%s frame: sequence %d, expected %d: %w", env.Type, env.Seq, c.recvSeq, ErrReplay)
	}
	c.recvSeq++
	if env.Type == TypeHello {
		var h Hello
		if err := json.Unmarshal(env.Body, &h); err != nil {
			return env.Type, nil, fmt.Errorf("malformed hello: %w", err)
		}
		if len(h.Nonce) != 32 {
			return env.Type, nil, fmt.Errorf("hello: nonce must be 16 bytes of hex, got %q", h.Nonce)
		}
		c.nonce = h.Nonce
	}
	return env.Type, env.Body, nil
}

// Expect reads one frame, requires it to be of type typ, and decodes its
// body into v.
func (c *Conn) Expect(typ string, v any) error {
	got, body, err := c.Receive()
	if err != nil {
		return err
	}
	if got != typ {
		return fmt.Errorf("expected a %s message, got %q", typ, got)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("malformed %s: %w", typ, err)
	}
	return nil
}

// readLine reads one newline-terminated frame of at most limit bytes. A
// frame cut off by the end of the stream is io.ErrUnexpectedEOF, not a
// short frame.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > limit {
			return nil, fmt.Errorf("frame larger than %d bytes: %w", limit, ErrFrameTooLarge)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}
