package shiplog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microfaas/microfaas/protocol"
)

func line(i int) protocol.LogLine {
	return protocol.LogLine{Source: protocol.LogKernel, Text: fmt.Sprintf("line %04d", i)} // 9 bytes
}

func TestRingBounds(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		maxLines, maxBytes, n int
		wantLines, wantDrop   int
	}{
		{"fits", 10, 1000, 5, 5, 0},
		{"line bound drops oldest", 4, 1000, 10, 4, 6},
		{"byte bound drops oldest", 100, 45, 10, 5, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRing(tc.maxLines, tc.maxBytes)
			for i := range tc.n {
				r.Add(line(i))
			}
			if n, b := r.Len(); n != tc.wantLines || b > tc.maxBytes {
				t.Errorf("Len = %d lines, %d bytes; want %d lines, at most %d bytes", n, b, tc.wantLines, tc.maxBytes)
			}
			got, dropped := r.Take(1 << 20)
			if len(got) != tc.wantLines || dropped != tc.wantDrop {
				t.Fatalf("Take: %d lines, %d dropped; want %d, %d", len(got), dropped, tc.wantLines, tc.wantDrop)
			}
			// The newest survive, in order.
			for i, l := range got {
				if want := line(tc.n - tc.wantLines + i).Text; l.Text != want {
					t.Errorf("line %d = %q, want %q", i, l.Text, want)
				}
			}
			if _, d := r.Take(1 << 20); d != 0 {
				t.Errorf("dropped counted twice: %d", d)
			}
		})
	}
}

func TestRingTakeBatch(t *testing.T) {
	r := NewRing(100, 10000)
	for i := range 10 {
		r.Add(line(i))
	}
	got, _ := r.Take(20) // two lines of 9 bytes
	if len(got) != 2 {
		t.Errorf("Take(20) = %d lines, want 2", len(got))
	}
	if got, _ := r.Take(1); len(got) != 1 {
		t.Errorf("Take(1) = %d lines, want 1: a line longer than the batch still goes alone", len(got))
	}
	long := strings.Repeat("é", protocol.MaxLogLine) // 2 bytes a rune
	r.Add(protocol.LogLine{Text: long})
	got, _ = r.Take(1 << 20)
	last := got[len(got)-1].Text
	if len(last) > protocol.MaxLogLine || !strings.HasPrefix(long, last) || len(last) < protocol.MaxLogLine-1 {
		t.Errorf("a long line is cut to %d bytes on a rune boundary, want at most %d", len(last), protocol.MaxLogLine)
	}
}

// fakeClock advances only when slept on.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }
func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.t = c.t.Add(d)
	return nil
}

// TestShipperRateLimit: a flood is sent no faster than the burst plus the
// rate, and every line is either sent or counted as dropped.
func TestShipperRateLimit(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	r := NewRing(1000, 1<<20)
	const rate, burst, seconds = 10 << 10, 20 << 10, 10
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := clk.t
	added := 0
	flood := func() { // the kernel keeps logging: 500 lines per batch sent
		for range 500 {
			r.Add(line(added))
			added++
		}
	}
	flood()
	var got Sent
	s := &Shipper{Ring: r, Rate: rate, Burst: burst, Now: clk.now, Sleep: clk.sleep,
		Send: func(b protocol.LogBatch) error {
			for _, l := range b.Lines {
				got.Bytes += len(l.Text) + lineCost
			}
			got.Lines += len(b.Lines)
			got.Dropped += b.Dropped
			if len(b.Lines) == 0 && b.Dropped == 0 {
				t.Error("empty batch sent")
			}
			if clk.t.Sub(start) >= seconds*time.Second {
				cancel()
				return nil
			}
			flood()
			return nil
		}}
	sent, err := s.Run(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	elapsed := clk.t.Sub(start).Seconds()
	limit := burst + rate*elapsed + protocol.MaxLogBatch
	if float64(got.Bytes) > limit {
		t.Errorf("sent %d bytes in %.1f s: over the limit %.0f", got.Bytes, elapsed, limit)
	}
	if float64(got.Bytes) < rate*elapsed*0.8 {
		t.Errorf("sent only %d bytes in %.1f s at %d B/s", got.Bytes, elapsed, rate)
	}
	held, _ := r.Len()
	_, pending := r.Take(0)
	if got.Lines+got.Dropped+held+pending != added {
		t.Errorf("sent %d + dropped %d + held %d + pending drops %d != added %d", got.Lines, got.Dropped, held, pending, added)
	}
	if got.Dropped == 0 {
		t.Error("a flood over the rate dropped nothing")
	}
	if sent.Lines != got.Lines {
		t.Errorf("Run reports %d lines, the peer got %d", sent.Lines, got.Lines)
	}
}

func TestParseKmsg(t *testing.T) {
	for _, tc := range []struct {
		rec      string
		ok       bool
		seq      int64
		text     string
		uptimeMS float64
	}{
		{"5,0,0,-;Linux version 6.1.0 (mf@mf) #1\n", true, 0, "[    0.000000] Linux version 6.1.0 (mf@mf) #1", 0},
		{"6,339,5140900,-;NET: Registered PF_INET6\n SUBSYSTEM=net\n DEVICE=+net:lo\n", true, 339, "[    5.140900] NET: Registered PF_INET6", 5140.9},
		{"6,12,1234567,c;a;b\n", true, 12, "[    1.234567] a;b", 1234.567},
		{"garbage", false, 0, "", 0},
		{"6,x,1,-;msg\n", false, 0, "", 0},
	} {
		l, seq, ok := ParseKmsg([]byte(tc.rec))
		if ok != tc.ok || (ok && (seq != tc.seq || l.Text != tc.text || l.UptimeMS != tc.uptimeMS || l.Source != protocol.LogKernel)) {
			t.Errorf("ParseKmsg(%q) = %+v, %d, %v; want %q seq %d", tc.rec, l, seq, ok, tc.text, tc.seq)
		}
	}
}

// kmsgReader returns one record per Read, as /dev/kmsg does.
type kmsgReader struct{ recs []any }

func (k *kmsgReader) Read(p []byte) (int, error) {
	if len(k.recs) == 0 {
		return 0, io.EOF
	}
	r := k.recs[0]
	k.recs = k.recs[1:]
	if err, ok := r.(error); ok {
		return 0, err
	}
	return copy(p, r.(string)), nil
}

func TestReadKmsgCountsOverwritten(t *testing.T) {
	r := NewRing(100, 1<<20)
	src := &kmsgReader{recs: []any{"6,0,1,-;first\n", "6,1,2,-;second\n", syscall.EPIPE, "6,5,3,-;after the gap\n"}}
	if err := ReadKmsg(src, r); !errors.Is(err, io.EOF) {
		t.Fatalf("ReadKmsg: %v", err)
	}
	lines, dropped := r.Take(1 << 20)
	if len(lines) != 3 || dropped != 3 {
		t.Errorf("%d lines, %d dropped; want 3 lines and the 3 overwritten records (2, 3, 4) dropped", len(lines), dropped)
	}
}

func TestWriterLines(t *testing.T) {
	r := NewRing(100, 1<<20)
	w := NewWriter(r, protocol.LogMfinit)
	io.WriteString(w, "level=INFO msg=one\nlevel=INFO ")
	io.WriteString(w, "msg=two\n")
	io.WriteString(w, strings.Repeat("x", 3*protocol.MaxLogLine)+"\n")
	lines, _ := r.Take(1 << 20)
	if len(lines) != 3 || lines[0].Text != "level=INFO msg=one" || lines[1].Text != "level=INFO msg=two" ||
		len(lines[2].Text) != protocol.MaxLogLine || lines[0].Source != protocol.LogMfinit {
		t.Errorf("lines = %+v", lines)
	}
}

func TestRingSentMark(t *testing.T) {
	r := NewRing(4, 1<<20)
	for i := range 3 {
		r.Add(line(i))
	}
	mark := r.Added()
	if r.Sent(mark) {
		t.Error("Sent before anything left")
	}
	r.Take(9) // one line
	if r.Sent(mark) {
		t.Error("Sent with two lines of the mark still held")
	}
	for i := range 4 { // a flood pushes the rest out
		r.Add(line(10 + i))
	}
	if !r.Sent(mark) {
		t.Error("the marked lines were dropped by newer ones: they are gone")
	}
}

// TestShipperFlush: once flushed, a batch goes without lingering.
func TestShipperFlush(t *testing.T) {
	for _, flush := range []bool{false, true} {
		clk := &fakeClock{t: time.Unix(0, 0)}
		r := NewRing(100, 1<<20)
		ctx, cancel := context.WithCancel(context.Background())
		var lingered time.Duration
		s := &Shipper{Ring: r, Linger: time.Second, Now: clk.now,
			Sleep: func(ctx context.Context, d time.Duration) error { lingered += d; return clk.sleep(ctx, d) },
			Send:  func(protocol.LogBatch) error { cancel(); return nil }}
		if flush {
			s.Flush()
			s.Flush() // twice is fine
		}
		go r.Add(line(1))
		s.Run(ctx)
		if want := map[bool]time.Duration{false: time.Second, true: 0}[flush]; lingered != want {
			t.Errorf("flush %v: lingered %s, want %s", flush, lingered, want)
		}
	}
}

// TestShipperFlushEndsLinger: a Flush during the linger sends at once.
func TestShipperFlushEndsLinger(t *testing.T) {
	r := NewRing(100, 1<<20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sent := make(chan struct{}, 1)
	s := &Shipper{Ring: r, Linger: time.Hour, Send: func(protocol.LogBatch) error { sent <- struct{}{}; return nil }}
	go s.Run(ctx)
	r.Add(line(1))
	time.Sleep(20 * time.Millisecond) // Run is lingering by now
	s.Flush()
	select {
	case <-sent:
	case <-time.After(5 * time.Second):
		t.Fatal("Flush did not end an hour's linger")
	}
}

// signalReader is a kmsg source that reports each read.
type signalReader struct {
	kmsgReader
	reads chan struct{}
}

func (s *signalReader) Read(p []byte) (int, error) {
	s.reads <- struct{}{}
	return s.kmsgReader.Read(p)
}

// TestReadKmsgHeld: a held ring's kernel log reader reads nothing (the job
// has the CPU); on Release it goes on, and what the kernel overwrote
// meanwhile counts as dropped.
func TestReadKmsgHeld(t *testing.T) {
	r := NewRing(100, 1<<20)
	r.Hold()
	src := &signalReader{kmsgReader: kmsgReader{recs: []any{"6,0,1,-;before\n", "6,40,2,-;after 39 overwritten\n"}}, reads: make(chan struct{}, 10)}
	done := make(chan error, 1)
	go func() { done <- ReadKmsg(src, r) }()
	select {
	case <-src.reads:
		t.Fatal("read /dev/kmsg while held")
	case <-time.After(50 * time.Millisecond):
	}
	r.Release()
	if err := <-done; !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	lines, dropped := r.Take(1 << 20)
	if len(lines) != 2 || dropped != 39 {
		t.Errorf("%d lines, %d dropped; want 2 and 39", len(lines), dropped)
	}
}

// TestShipperHold: nothing goes while the ring is held; what waited goes
// on Release.
func TestShipperHold(t *testing.T) {
	r := NewRing(100, 1<<20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sent := make(chan int, 10)
	s := &Shipper{Ring: r, Linger: time.Millisecond, Send: func(b protocol.LogBatch) error { sent <- len(b.Lines); return nil }}
	r.Hold()
	go s.Run(ctx)
	r.Add(line(1))
	r.Add(line(2))
	select {
	case n := <-sent:
		t.Fatalf("sent %d lines while held", n)
	case <-time.After(100 * time.Millisecond):
	}
	r.Release()
	select {
	case n := <-sent:
		if n != 2 {
			t.Errorf("sent %d lines on release, want the 2 held", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing sent after Release")
	}
}
