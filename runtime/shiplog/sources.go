package shiplog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"syscall"

	"github.com/microfaas/microfaas/protocol"
)

// KmsgPath is the kernel's log, one record per read.
const KmsgPath = "/dev/kmsg"

// ReadKmsg reads /dev/kmsg records from r into ring until r fails (it
// blocks for new records once it has read the old ones: run it in its own
// goroutine), and reads none while the ring is held. Records the kernel
// overwrote before they were read (EPIPE, or a gap in their sequence
// numbers) are counted as dropped.
func ReadKmsg(r io.Reader, ring *Ring) error {
	buf := make([]byte, 8192) // a record is at most 1 KiB of text plus its dictionary
	next := int64(-1)
	for {
		ring.released(nil)
		n, err := r.Read(buf)
		if errors.Is(err, syscall.EPIPE) {
			continue // the next read returns the oldest record still held; the gap counts it
		}
		if err != nil {
			return err
		}
		line, seq, ok := ParseKmsg(buf[:n])
		if !ok {
			continue
		}
		if next >= 0 && seq > next {
			ring.Lost(int(seq - next))
		}
		next = seq + 1
		ring.Add(line)
	}
}

// ParseKmsg reads one /dev/kmsg record, "PRI,SEQ,USEC,FLAGS;message\n"
// then " KEY=value" dictionary lines, into a kernel line as dmesg prints
// it: "[    1.234567] message".
func ParseKmsg(rec []byte) (line protocol.LogLine, seq int64, ok bool) {
	head, msg, found := bytes.Cut(rec, []byte(";"))
	if !found {
		return line, 0, false
	}
	msg, _, _ = bytes.Cut(msg, []byte("\n"))
	f := bytes.Split(head, []byte(","))
	if len(f) < 3 {
		return line, 0, false
	}
	seq, err1 := strconv.ParseInt(string(f[1]), 10, 64)
	usec, err2 := strconv.ParseInt(string(f[2]), 10, 64)
	if err1 != nil || err2 != nil {
		return line, 0, false
	}
	return protocol.LogLine{Source: protocol.LogKernel, UptimeMS: float64(usec) / 1000,
		Text: fmt.Sprintf("[%5d.%06d] %s", usec/1e6, usec%1e6, msg)}, seq, true
}

// Writer is an io.Writer whose lines go into a Ring as Source lines:
// mfinit's log handler writes to it beside the console. A line longer than
// protocol.MaxLogLine is cut.
type Writer struct {
	Ring   *Ring
	Source string
	mu     sync.Mutex
	part   []byte // a line not yet ended
}

// NewWriter returns a Writer into ring for source.
func NewWriter(ring *Ring, source string) *Writer { return &Writer{Ring: ring, Source: source} }

func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		line, rest, found := bytes.Cut(p, []byte("\n"))
		if !found {
			w.part = append(w.part, line[:min(len(line), max(0, protocol.MaxLogLine-len(w.part)))]...)
			break
		}
		text := string(line)
		if len(w.part) > 0 {
			text = string(append(w.part, line...))
			w.part = w.part[:0]
		}
		w.Ring.Add(protocol.LogLine{Source: w.Source, Text: text})
		p = rest
	}
	return n, nil
}
