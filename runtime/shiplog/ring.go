// Package shiplog is a worker's own log on its way to the orchestrator:
// the kernel's log (/dev/kmsg) and mfinit's, held in a bounded ring that
// drops its oldest lines when full, and sent in batches no faster than a
// rate limit, so a flood of kernel messages costs a running job neither
// memory nor the connection. A function's output never enters it (that
// comes back with the function's result).
package shiplog

import (
	"context"
	"sync"

	"github.com/microfaas/microfaas/protocol"
)

// Ring bounds: enough for a whole boot's kernel log (a few hundred lines,
// some 30 KiB on both targets) with room to spare.
const (
	DefaultMaxLines = 2048
	DefaultMaxBytes = 256 << 10
)

// Ring holds the lines not yet sent, at most MaxLines lines and MaxBytes
// bytes of text; adding to a full ring drops its oldest lines and counts
// them. Safe for concurrent use.
type Ring struct {
	mu       sync.Mutex
	maxLines int
	maxBytes int
	lines    []protocol.LogLine // a FIFO: lines[head:] then lines[:head] once wrapped
	head, n  int
	bytes    int
	dropped  int // since the last Take
	total    int // lines ever added
	out      int // lines ever taken or dropped from the ring
	ready    chan struct{}
	held     bool
	release  chan struct{} // closed by Release while held
}

// Hold pauses the log's way out until Release: the Shipper sends nothing
// (after a batch under way) and ReadKmsg reads nothing (the kernel keeps
// what comes meanwhile, overwriting its oldest records when its buffer is
// full, and the reader counts those it lost). A worker holds its log while
// it runs a job, so that neither takes the CPU or the link from the job.
// Lines still go into the ring meanwhile (mfinit's own, rare).
func (r *Ring) Hold() {
	r.mu.Lock()
	r.held = true
	r.mu.Unlock()
}

// Release ends a Hold.
func (r *Ring) Release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held = false
	if r.release != nil {
		close(r.release)
		r.release = nil
	}
}

// released waits while the ring is held (nil ctx: for good).
func (r *Ring) released(ctx context.Context) error {
	r.mu.Lock()
	if !r.held {
		r.mu.Unlock()
		return nil
	}
	if r.release == nil {
		r.release = make(chan struct{})
	}
	ch := r.release
	r.mu.Unlock()
	if ctx == nil {
		<-ch
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NewRing returns a ring of at most maxLines lines and maxBytes bytes
// (0: the defaults).
func NewRing(maxLines, maxBytes int) *Ring {
	if maxLines <= 0 {
		maxLines = DefaultMaxLines
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	return &Ring{maxLines: maxLines, maxBytes: maxBytes, lines: make([]protocol.LogLine, maxLines), ready: make(chan struct{}, 1)}
}

// Add appends l, its text cut to protocol.MaxLogLine, dropping the oldest
// lines while the ring is over its bounds. It never blocks.
func (r *Ring) Add(l protocol.LogLine) {
	l.Text = cut(l.Text, protocol.MaxLogLine)
	r.mu.Lock()
	r.total++
	for r.n > 0 && (r.n == r.maxLines || r.bytes+len(l.Text) > r.maxBytes) {
		r.popLocked()
		r.dropped++
	}
	r.lines[(r.head+r.n)%r.maxLines] = l
	r.n++
	r.bytes += len(l.Text)
	r.mu.Unlock()
	select {
	case r.ready <- struct{}{}:
	default:
	}
}

func (r *Ring) popLocked() protocol.LogLine {
	l := r.lines[r.head]
	r.out++
	r.lines[r.head] = protocol.LogLine{}
	r.head = (r.head + 1) % r.maxLines
	r.n--
	r.bytes -= len(l.Text)
	return l
}

// Take removes the oldest lines, as many as fit in maxBytes of text and
// protocol.MaxLogLines lines (at least one, if any is held), and returns
// them with the count of lines dropped since the last Take.
func (r *Ring) Take(maxBytes int) (lines []protocol.LogLine, dropped int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	size := 0
	for r.n > 0 && len(lines) < protocol.MaxLogLines {
		next := len(r.lines[r.head].Text)
		if len(lines) > 0 && size+next > maxBytes {
			break
		}
		size += next
		lines = append(lines, r.popLocked())
	}
	dropped, r.dropped = r.dropped, 0
	return lines, dropped
}

// Lost counts n lines dropped that never reached the ring (the kernel's
// own buffer overwrote them before they were read) or left it unsent (a
// send that failed): the next batch says so.
func (r *Ring) Lost(n int) {
	r.mu.Lock()
	r.dropped += n
	r.mu.Unlock()
}

// Len is the lines and bytes of text held.
func (r *Ring) Len() (lines, bytes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n, r.bytes
}

// Added is how many lines were ever added.
func (r *Ring) Added() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// Sent reports whether every line added before Added returned mark has
// left the ring (taken to be sent, or dropped): a session's end waits for
// the lines it held, not for a flood that keeps coming.
func (r *Ring) Sent(mark int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out >= mark
}

// Ready is signalled (without blocking the adder) when a line is added.
func (r *Ring) Ready() <-chan struct{} { return r.ready }

// cut shortens s to at most n bytes, on a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i]
}
