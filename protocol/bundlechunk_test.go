package protocol

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
)

// orchWorker is an orchestrator's Conn and a worker's on one buffer, past
// the hello: the orchestrator writes, the worker reads.
func orchWorker(t *testing.T) (orch, worker *Conn, buf *pipe) {
	t.Helper()
	secret := []byte("0123456789abcdef")
	w, o, buf := pair(t, secret, secret)
	hello(t, w)
	var h Hello
	if err := o.Expect(TypeHello, &h); err != nil {
		t.Fatal(err)
	}
	return o, w, buf
}

// Chunks of every size go through as a header frame and raw bytes; the
// frames around them stay in sequence.
func TestBundleChunkRoundTrip(t *testing.T) {
	full := make([]byte, BundleChunkSize)
	rand.Read(full)
	o, w, _ := orchWorker(t)
	sent := []BundleChunk{
		{Digest: "sha256:aa", Offset: 0, Data: full},
		{Digest: "sha256:aa", Offset: BundleChunkSize, Data: []byte("tail\n{\"not\":\"a frame\"}\n")},
		{Digest: "sha256:aa", Offset: BundleChunkSize + 24},
		{Digest: "sha256:bb", Error: "not this worker's job"},
	}
	for _, c := range sent {
		if err := o.SendBundleChunk(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Send(TypeCommand, Command{Action: CmdWait}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, BundleChunkSize)
	for i, want := range sent {
		got, err := w.ReceiveBundleChunk(buf)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if got.Digest != want.Digest || got.Offset != want.Offset || got.Error != want.Error ||
			got.Length != len(want.Data) || !bytes.Equal(got.Data, want.Data) {
			t.Errorf("chunk %d: %s at %d, %d bytes (length %d), error %q; want %s at %d, %d bytes, error %q",
				i, got.Digest, got.Offset, len(got.Data), got.Length, got.Error, want.Digest, want.Offset, len(want.Data), want.Error)
		}
	}
	var cmd Command
	if err := w.Expect(TypeCommand, &cmd); err != nil || cmd.Action != CmdWait {
		t.Fatalf("the frame after the chunks: %+v, %v", cmd, err)
	}
}

// What the header's MAC covers (digest, offset, length, error, and the
// frame's sequence number) cannot be changed; the raw bytes can, and only
// the bundle's digest, checked by the worker, catches that.
func TestBundleChunkAuthentication(t *testing.T) {
	data := []byte("0123456789")
	tests := []struct {
		name   string
		tamper func(frame string) string
		want   error  // from the chunk
		msg    string // in the error
		data   string // received, if no error
	}{
		{"untouched", nil, nil, "", "0123456789"},
		{"raw bytes altered: not caught here", func(f string) string { return strings.Replace(f, "0123456789", "0123456780", 1) }, nil, "", "0123456780"},
		{"length altered", func(f string) string { return strings.Replace(f, `"length":10`, `"length":9`, 1) }, ErrBadMAC, "", ""},
		{"offset altered", func(f string) string { return strings.Replace(f, `"offset":7`, `"offset":8`, 1) }, ErrBadMAC, "", ""},
		{"replayed", func(f string) string { return f + f }, nil, "", "0123456789"}, // the replay fails next
		{"bytes cut short", func(f string) string { return f[:len(f)-3] }, io.ErrUnexpectedEOF, "", ""},
		{"not binary framed", func(f string) string { return strings.Replace(f, "0123456789", "", 1) }, io.ErrUnexpectedEOF, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, w, buf := orchWorker(t)
			if err := o.SendBundleChunk(BundleChunk{Digest: "sha256:aa", Offset: 7, Data: data}); err != nil {
				t.Fatal(err)
			}
			if tt.tamper != nil {
				f := tt.tamper(buf.String())
				buf.Reset()
				buf.WriteString(f)
			}
			got, err := w.ReceiveBundleChunk(make([]byte, BundleChunkSize))
			switch {
			case tt.want != nil:
				if !errors.Is(err, tt.want) {
					t.Fatalf("err %v, want %v", err, tt.want)
				}
				return
			case err != nil:
				t.Fatal(err)
			case string(got.Data) != tt.data:
				t.Fatalf("data %q, want %q", got.Data, tt.data)
			}
			// Sequence numbers are in step: a replayed chunk is refused, the
			// next real frame is not.
			if _, err := w.ReceiveBundleChunk(make([]byte, BundleChunkSize)); !errors.Is(err, ErrReplay) && !errors.Is(err, io.EOF) {
				t.Fatalf("a second chunk (replayed or none): %v, want ErrReplay or EOF", err)
			}
		})
	}
}

// A peer cannot make the other side buffer more than one chunk, nor slip
// raw bytes past a reader that does not expect them.
func TestBundleChunkBounds(t *testing.T) {
	small := make([]byte, BundleChunkSize)
	tests := []struct {
		name string
		run  func(o, w *Conn) error
		want error
		msg  string
	}{
		{"send over the chunk size", func(o, w *Conn) error {
			return o.SendBundleChunk(BundleChunk{Data: make([]byte, BundleChunkSize+1)})
		}, ErrFrameTooLarge, ""},
		{"a header that lies about its length", func(o, w *Conn) error {
			// Authenticated, as only the real peer could send it.
			if err := o.send(TypeBundleChunk, BundleChunk{Digest: "sha256:aa", Length: 1 << 30}, nil); err != nil {
				return err
			}
			_, err := w.ReceiveBundleChunk(small)
			return err
		}, ErrFrameTooLarge, ""},
		{"a negative length", func(o, w *Conn) error {
			o.send(TypeBundleChunk, BundleChunk{Digest: "sha256:aa", Length: -1}, nil)
			_, err := w.ReceiveBundleChunk(small)
			return err
		}, nil, "length -1"},
		{"an error with data", func(o, w *Conn) error {
			o.send(TypeBundleChunk, BundleChunk{Error: "no", Length: 3}, []byte("abc"))
			_, err := w.ReceiveBundleChunk(small)
			return err
		}, nil, "with an error and 3 bytes"},
		{"a buffer under the chunk size", func(o, w *Conn) error {
			o.SendBundleChunk(BundleChunk{Data: []byte("x")})
			_, err := w.ReceiveBundleChunk(small[:10])
			return err
		}, nil, "buffer of 10 bytes"},
		{"Send of a chunk that is not a BundleChunk", func(o, w *Conn) error {
			return o.Send(TypeBundleChunk, map[string]string{"data": "eA=="})
		}, nil, "want a protocol.BundleChunk"},
		{"Send of a BundleChunk goes binary", func(o, w *Conn) error {
			o.Send(TypeBundleChunk, BundleChunk{Data: []byte("x")})
			c, err := w.ReceiveBundleChunk(small)
			if err == nil && string(c.Data) != "x" {
				err = errors.New("wrong data")
			}
			return err
		}, nil, ""},
		{"Receive of a chunk", func(o, w *Conn) error {
			o.SendBundleChunk(BundleChunk{Data: []byte("x")})
			_, _, err := w.Receive()
			return err
		}, ErrBinaryFrame, ""},
		{"another frame where a chunk is due", func(o, w *Conn) error {
			o.Send(TypeCommand, Command{Action: CmdPowerOff})
			_, err := w.ReceiveBundleChunk(small)
			return err
		}, nil, `got "command"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, w, _ := orchWorker(t)
			err := tt.run(o, w)
			if tt.want != nil && !errors.Is(err, tt.want) || tt.msg != "" && (err == nil || !strings.Contains(err.Error(), tt.msg)) {
				t.Fatalf("err %v, want %v %q", err, tt.want, tt.msg)
			}
		})
	}
}
