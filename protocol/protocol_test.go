package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// pipe is a one-way buffer both Conns share: what one writes the other reads.
type pipe struct{ bytes.Buffer }

func pair(t *testing.T, wsecret, osecret []byte) (worker, orch *Conn, buf *pipe) {
	t.Helper()
	buf = &pipe{}
	return NewConn(buf, wsecret), NewConn(buf, osecret), buf
}

func hello(t *testing.T, c *Conn) string {
	t.Helper()
	n, err := NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	c.SetNonce(n)
	if err := c.Send(TypeHello, Hello{Proto: Version, WorkerID: "w1", Nonce: n}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRoundTrip(t *testing.T) {
	secret := []byte("0123456789abcdef")
	w, o, _ := pair(t, secret, secret)
	nonce := hello(t, w)
	var h Hello
	if err := o.Expect(TypeHello, &h); err != nil {
		t.Fatal(err)
	}
	if h.WorkerID != "w1" || h.Nonce != nonce {
		t.Fatalf("hello = %+v", h)
	}
	job := Job{ID: "abc123", Function: "cascading_sha256", Args: json.RawMessage(`{"data":"x","rounds":1}`)}
	if err := o.Send(TypeJob, job); err != nil {
		t.Fatal(err)
	}
	var got Job
	if err := w.Expect(TypeJob, &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != job.ID || string(got.Args) != string(job.Args) {
		t.Fatalf("job = %+v", got)
	}
}

func TestAuthenticationFailures(t *testing.T) {
	secret := []byte("0123456789abcdef")
	tests := []struct {
		name   string
		tamper func(frame string) string
		osec   []byte
		want   error
		msg    string
	}{
		{"wrong secret", nil, []byte("fedcba9876543210"), ErrBadMAC, ""},
		{"altered body", func(f string) string { return strings.Replace(f, `"rounds":1`, `"rounds":9`, 1) }, secret, ErrBadMAC, ""},
		{"replayed sequence", func(f string) string { return f + f }, secret, nil, "sequence 0, expected 1"},
		{"not json", func(string) string { return "hello\n" }, secret, nil, "malformed frame"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, o, buf := pair(t, secret, tt.osec)
			hello(t, w)
			var h Hello
			err := o.Expect(TypeHello, &h)
			if tt.tamper == nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("hello with the wrong secret: err = %v, want %v", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The orchestrator's job, tampered on the way to the worker.
			o.Send(TypeJob, Job{ID: "i1", Function: "f", Args: json.RawMessage(`{"rounds":1}`)})
			frame := buf.String()
			buf.Reset()
			buf.WriteString(tt.tamper(frame))
			var j Job
			err = w.Expect(TypeJob, &j)
			if tt.name == "replayed sequence" {
				if err != nil {
					t.Fatalf("first copy refused: %v", err)
				}
				err = w.Expect(TypeJob, &j)
			}
			if err == nil {
				t.Fatal("tampered frame accepted")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.msg != "" && !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %q", err, tt.msg)
			}
		})
	}
}

func TestFrameLimitAndEOF(t *testing.T) {
	c := NewConn(struct {
		io.Reader
		io.Writer
	}{strings.NewReader(strings.Repeat("x", MaxFrame+10)), io.Discard}, []byte("k"))
	if _, _, err := c.Receive(); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized frame: %v", err)
	}
	c = NewConn(struct {
		io.Reader
		io.Writer
	}{strings.NewReader(`{"type":"hel`), io.Discard}, []byte("k"))
	if _, _, err := c.Receive(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame: %v", err)
	}
}

// FuzzReceive feeds arbitrary bytes to the frame decoder: it must return an
// error or a frame, never panic.
func FuzzReceive(f *testing.F) {
	f.Add([]byte(`{"type":"job","seq":0,"body":{},"mac":"00"}` + "\n"))
	f.Add([]byte(`{"type":"hello","seq":0,"body":{"nonce":"x"},"mac":""}` + "\n"))
	f.Add([]byte("\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := NewConn(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(b), io.Discard}, []byte("k"))
		for i := 0; i < 4; i++ {
			if _, _, err := c.Receive(); err != nil {
				return
			}
		}
	})
}
