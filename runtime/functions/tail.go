package functions

import "sync"

// Tail keeps the last bytes written to it (at most its max) and counts
// every byte, so a caller can take what was written since a mark: a
// function's stderr for one call, or what a long-lived watchdog wrote
// during one call. It is safe for concurrent use: a watchdog's stdout and
// stderr write while a call reads.
type Tail struct {
	mu    sync.Mutex
	max   int
	b     []byte
	total int64
}

// NewTail returns a Tail that keeps the last max bytes.
func NewTail(max int) *Tail { return &Tail{max: max} }

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total += int64(len(p))
	if len(p) >= t.max {
		t.b = append(t.b[:0], p[len(p)-t.max:]...)
		return len(p), nil
	}
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// Mark is the count of bytes written so far, for Since.
func (t *Tail) Mark() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// Since is what was written after mark, or its last max bytes when more
// was written (or the part still kept).
func (t *Tail) Since(mark int64) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.total - mark
	if n <= 0 {
		return ""
	}
	if n > int64(len(t.b)) {
		n = int64(len(t.b))
	}
	return string(t.b[int64(len(t.b))-n:])
}

// String is everything kept: the last max bytes written.
func (t *Tail) String() string { return t.Since(0) }
