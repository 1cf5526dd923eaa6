package protocol

import (
	"bufio"
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// RFC 5869 test case 1: the HKDF this package builds on.
func TestHKDFVector(t *testing.T) {
	ikm, _ := hex.DecodeString("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b")
	salt, _ := hex.DecodeString("000102030405060708090a0b0c")
	info, _ := hex.DecodeString("f0f1f2f3f4f5f6f7f8f9")
	okm, err := hkdf.Key(sha256.New, ikm, salt, string(info), 42)
	if err != nil {
		t.Fatal(err)
	}
	want := "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
	if hex.EncodeToString(okm) != want {
		t.Fatalf("OKM %x", okm)
	}
}

// TestWorkerKey pins the derivation: mfbuild, mforch and workers built at
// different times must agree on every worker's key.
func TestWorkerKey(t *testing.T) {
	k0, err := WorkerKey(testSecret, "vm0")
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := WorkerKey(testSecret, "vm1")
	if got := hex.EncodeToString(k0); got != workerKeyVM0 {
		t.Errorf("WorkerKey(vm0) = %s, want %s", got, workerKeyVM0)
	}
	if bytes.Equal(k0, k1) || bytes.Equal(k0, testSecret[:KeySize]) {
		t.Error("worker keys must differ from each other and from the secret")
	}
	if _, err := WorkerKey([]byte("short"), "vm0"); err == nil {
		t.Error("a short cluster secret was accepted")
	}
	if _, err := WorkerKey(testSecret, ""); err == nil {
		t.Error("an empty id was accepted")
	}
	back, err := DecodeKey(EncodeKey(k0))
	if err != nil || !bytes.Equal(back, k0) {
		t.Errorf("key file round trip: %x, %v", back, err)
	}
	if _, err := DecodeKey([]byte("abcd\n")); err == nil {
		t.Error("a short key file was accepted")
	}
}

// workerKeyVM0 was computed independently (Python hmac, RFC 5869 extract
// and expand by hand).
const workerKeyVM0 = "c0424e2e977aef0d829657d8fcfd3a5a719ee1fa0151209d8137de515d884edf"

// recorder keeps what one side wrote, to replay it later.
type recorder struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.out.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

var workerAddr = &net.TCPAddr{IP: net.IPv4(10, 0, 0, 10), Port: 40000}

// session runs a handshake over a pipe: the worker (claiming id, holding
// key) against an orchestrator that knows vm0 (at 10.0.0.10) and vm1.
func session(t *testing.T, id string, key []byte, remote net.Addr) (w, o *Conn, wrote *recorder, err error) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	rec := &recorder{Conn: a}
	done := make(chan struct{})
	var werr error
	go func() {
		defer close(done)
		w, werr = ClientHandshake(rec, key, Hello{WorkerID: id, Arch: "amd64"})
	}()
	keys := ClusterKeys(testSecret, map[string]string{"vm0": "10.0.0.10", "vm1": ""})
	o, _, err = ServerHandshake(b, remote, keys)
	if err != nil {
		b.Close()
	}
	<-done
	if err == nil && werr != nil {
		t.Fatalf("worker: %v", werr)
	}
	return w, o, rec, err
}

func key(t *testing.T, id string) []byte {
	k, err := WorkerKey(testSecret, id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestHandshakeRoundTrip(t *testing.T) {
	w, o, _, err := session(t, "vm0", key(t, "vm0"), workerAddr)
	if err != nil {
		t.Fatal(err)
	}
	go o.Send(TypeJob, Job{ID: "j1", Function: "f"})
	var j Job
	if err := w.Expect(TypeJob, &j); err != nil || j.ID != "j1" {
		t.Fatalf("job %+v, %v", j, err)
	}
	go w.Send(TypeResult, Result{ID: "j1", Result: json.RawMessage(`"ok"`)})
	var r Result
	if err := o.Expect(TypeResult, &r); err != nil || string(r.Result) != `"ok"` {
		t.Fatalf("result %+v, %v", r, err)
	}
}

// TestHandshakeAttacks: each attack on the worker port fails with its error.
func TestHandshakeAttacks(t *testing.T) {
	other, _ := WorkerKey([]byte("another cluster's secret 0123456"), "vm0")
	tests := []struct {
		name   string
		id     string
		key    []byte
		remote net.Addr
		want   error
	}{
		{"another worker's id with its own key", "vm0", key(t, "vm1"), workerAddr, ErrBadMAC},
		{"the right id with another cluster's key", "vm0", other, workerAddr, ErrBadMAC},
		{"the cluster secret itself as key", "vm0", testSecret, workerAddr, ErrBadMAC},
		{"an id not in the cluster", "vm9", key(t, "vm9"), workerAddr, ErrUnknownWorker},
		{"the right key from another address", "vm0", key(t, "vm0"), &net.TCPAddr{IP: net.IPv4(10, 0, 0, 66), Port: 1}, ErrWrongAddress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := session(t, tt.id, tt.key, tt.remote)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// serverWith runs ServerHandshake against raw bytes an attacker sends after
// reading the challenge.
func serverWith(t *testing.T, attack func(challenge Challenge, c net.Conn)) error {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer b.Close()
		line, err := bufio.NewReader(b).ReadString('\n')
		if err != nil {
			return
		}
		var env envelope
		var ch Challenge
		json.Unmarshal([]byte(line), &env)
		json.Unmarshal(env.Body, &ch)
		attack(ch, b)
	}()
	a.SetDeadline(time.Now().Add(10 * time.Second))
	_, _, err := ServerHandshake(a, workerAddr, ClusterKeys(testSecret, map[string]string{"vm0": "", "vm1": ""}))
	// The attacker's writes fail once our end is closed: wait for it, so
	// what it counted is read after it stopped.
	a.Close()
	<-done
	return err
}

// TestReplayedHello: a hello recorded on the LAN (key unknown to the
// attacker) is sent again to a new session.
func TestReplayedHello(t *testing.T) {
	_, _, rec, err := session(t, "vm1", key(t, "vm1"), workerAddr)
	if err != nil {
		t.Fatal(err)
	}
	captured := rec.out.String()
	err = serverWith(t, func(_ Challenge, c net.Conn) { io.WriteString(c, captured) })
	if !errors.Is(err, ErrBadMAC) {
		t.Fatalf("replayed hello: err = %v, want %v", err, ErrBadMAC)
	}
}

// TestForgedFrames: inside an authenticated session, frames not made with
// this session's key, nonces and direction are refused.
func TestForgedFrames(t *testing.T) {
	// A result recorded from an earlier session of the same worker.
	w1, o1, rec, err := session(t, "vm1", key(t, "vm1"), workerAddr)
	if err != nil {
		t.Fatal(err)
	}
	go o1.Send(TypeJob, Job{ID: "j1"})
	var j Job
	w1.Expect(TypeJob, &j)
	go w1.Send(TypeResult, Result{ID: "j1", Result: json.RawMessage(`"real"`)})
	var r Result
	if err := o1.Expect(TypeResult, &r); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(rec.out.String(), "\n")
	oldResult := lines[1]

	forged := func(k []byte, session, dir string, seq uint64, typ, body string) string {
		b, _ := json.Marshal(envelope{Type: typ, Seq: seq, Body: json.RawMessage(body),
			MAC: macV2(k, dir, session, seq, typ, []byte(body))})
		return string(b) + "\n"
	}
	tests := []struct {
		name  string
		frame func(w *Conn) string
		want  error
	}{
		{"result from an earlier session", func(*Conn) string { return oldResult }, ErrBadMAC},
		{"result MACed with another worker's key", func(w *Conn) string {
			return forged(key(t, "vm0"), w.session, dirToOrch, 0, TypeResult, `{"i_id":"j2","result":"forged"}`)
		}, ErrBadMAC},
		{"the orchestrator's own job reflected back", func(w *Conn) string {
			return forged(key(t, "vm1"), w.session, dirToWorker, 0, TypeResult, `{"i_id":"j2","result":"forged"}`)
		}, ErrBadMAC},
		{"a second hello inside the session", func(w *Conn) string {
			return forged(key(t, "vm1"), w.session, dirToOrch, 0, TypeHello, `{}`)
		}, ErrReplay},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, o, _, err := session(t, "vm1", key(t, "vm1"), workerAddr)
			if err != nil {
				t.Fatal(err)
			}
			frame := tt.frame(w)
			go io.WriteString(w.rw, frame)
			var r Result
			if err := o.Expect(TypeResult, &r); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v (result %+v)", err, tt.want, r)
			}
		})
	}
}

// TestPreAuthLimit: a stranger's endless first frame is cut off at
// MaxHelloFrame, not buffered up to MaxFrame.
func TestPreAuthLimit(t *testing.T) {
	var sent int
	err := serverWith(t, func(_ Challenge, c net.Conn) {
		chunk := bytes.Repeat([]byte("A"), 4096)
		for sent < 4*MaxHelloFrame {
			n, err := c.Write(chunk)
			sent += n
			if err != nil {
				return
			}
		}
	})
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want %v", err, ErrFrameTooLarge)
	}
	if sent > 3*MaxHelloFrame {
		t.Errorf("read %d bytes before refusing", sent)
	}
}

// TestOldWorker: a version-1 worker is told to rebuild, not let in.
func TestOldWorker(t *testing.T) {
	err := serverWith(t, func(_ Challenge, c net.Conn) {
		v1 := NewConn(c, testSecret)
		v1.Send(TypeHello, Hello{Proto: 1, WorkerID: "vm0", Nonce: strings.Repeat("ab", 16)})
	})
	if !errors.Is(err, ErrBadHandshake) {
		t.Fatalf("err = %v, want %v", err, ErrBadHandshake)
	}
}
