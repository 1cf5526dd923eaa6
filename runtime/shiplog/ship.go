package shiplog

import (
	"context"
	"sync"
	"time"

	"github.com/microfaas/microfaas/protocol"
)

// Default shipping pace: a boot's whole kernel log goes at once (the
// burst), then at most DefaultRate, so that a worker flooded with kernel
// messages spends a bounded, small share of its CPU and link on them.
const (
	DefaultRate   = 32 << 10 // bytes of text per second
	DefaultBurst  = 128 << 10
	DefaultLinger = 100 * time.Millisecond
	// lineCost is what a line costs beyond its text (JSON and framing),
	// so that a flood of empty lines is limited too.
	lineCost = 32
)

// Shipper sends what its Ring holds in batches (protocol.LogBatch), at
// most Rate bytes a second after a Burst, and nothing while the Ring is
// held. It never holds the Ring's lock while it sends, so adders never
// wait for the connection.
type Shipper struct {
	Ring *Ring
	// Send writes one log frame; its error ends Run.
	Send  func(protocol.LogBatch) error
	Rate  int // bytes of text per second (DefaultRate)
	Burst int // bytes sent before the rate applies (DefaultBurst)
	// Linger is how long the first line of a batch waits for company
	// (DefaultLinger), so a trickle of lines is not a frame each.
	Linger time.Duration
	// Now and Sleep are the clock (nil: the real one); Sleep returns
	// early with ctx's error.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error

	tokens  float64
	last    time.Time
	mu      sync.Mutex
	flush   chan struct{} // closed by Flush
	flushed bool
}

// Flush makes Run send what it holds without lingering from now on (the
// session is ending). Safe to call from any goroutine, before or during Run.
func (s *Shipper) Flush() {
	ch := s.flushCh()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.flushed {
		s.flushed = true
		close(ch)
	}
}

func (s *Shipper) flushCh() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.flush == nil {
		s.flush = make(chan struct{})
	}
	return s.flush
}

// Sent is what Run sent, for tests and the worker's last log line.
type Sent struct {
	Frames, Lines, Bytes, Dropped int
}

// Run ships until ctx ends or a send fails, and returns what it sent.
func (s *Shipper) Run(ctx context.Context) (Sent, error) {
	rate, burst := float64(or(s.Rate, DefaultRate)), float64(or(s.Burst, DefaultBurst))
	linger := s.Linger
	if linger == 0 {
		linger = DefaultLinger
	}
	// Once the budget is spent, wait for a fair batch of it, not for each
	// line: a few frames a second, not one per line.
	batch := min(float64(protocol.MaxLogBatch), rate/4, burst)
	s.tokens, s.last = burst, s.now()
	var sent Sent
	flush := s.flushCh()
	for {
		if n, _ := s.Ring.Len(); n == 0 {
			select {
			case <-s.Ring.Ready():
			case <-ctx.Done():
				return sent, ctx.Err()
			}
			if err := s.linger(ctx, flush, linger); err != nil {
				return sent, err
			}
		}
		if err := s.Ring.released(ctx); err != nil {
			return sent, err
		}
		// Refill, and wait while the budget is spent.
		now := s.now()
		s.tokens = min(burst, s.tokens+rate*now.Sub(s.last).Seconds())
		s.last = now
		if s.tokens < lineCost {
			// At least 1 ms: a wait rounded down to nothing would spin.
			wait := max(time.Millisecond, time.Duration((batch-s.tokens)/rate*float64(time.Second)))
			if err := s.sleep(ctx, wait); err != nil {
				return sent, err
			}
			continue
		}
		lines, dropped := s.Ring.Take(min(protocol.MaxLogBatch, int(s.tokens)))
		if len(lines) == 0 && dropped == 0 {
			continue
		}
		cost := 0
		for _, l := range lines {
			cost += len(l.Text) + lineCost
		}
		s.tokens -= float64(cost)
		if err := s.Send(protocol.LogBatch{Lines: lines, Dropped: dropped}); err != nil {
			s.Ring.Lost(len(lines))
			return sent, err
		}
		sent.Frames++
		sent.Lines += len(lines)
		sent.Bytes += cost
		sent.Dropped += dropped
	}
}

func or(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func (s *Shipper) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// linger waits d for more lines, or until Flush.
func (s *Shipper) linger(ctx context.Context, flush <-chan struct{}, d time.Duration) error {
	select {
	case <-flush:
		return nil
	default:
	}
	if s.Sleep != nil {
		return s.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-flush:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Shipper) sleep(ctx context.Context, d time.Duration) error {
	if s.Sleep != nil {
		return s.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
