package protocol

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Acceptor serves the orchestrator's worker port: it accepts connections
// until the listener is closed, runs the version-2 handshake on each, and
// hands authenticated sessions to a handler. It bounds what strangers can
// cost: at most MaxPending connections may be in the handshake at once
// (the rest are closed at once), each has HelloTimeout to authenticate and
// MaxHelloFrame bytes to do it in. Accept errors (out of file descriptors,
// for one) are logged and retried with backoff: the port never stops
// silently.
type Acceptor struct {
	Keys KeyFunc
	// Handle runs one authenticated session. It owns c: it closes it when
	// the session is over (possibly after it returns, once its writer has
	// sent what is queued).
	Handle func(c net.Conn, pc *Conn, h Hello)
	// MaxPending bounds unauthenticated connections (default 32).
	MaxPending int
	// HelloTimeout bounds the handshake (default 10 s).
	HelloTimeout time.Duration
	Log          *slog.Logger

	mu      sync.Mutex
	pending int
	wg      sync.WaitGroup
}

// Backoff bounds for accept errors.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// Serve accepts on ln until it is closed; then it returns nil once every
// handshake under way has ended (sessions are Handle's to end).
func (a *Acceptor) Serve(ln net.Listener) error {
	if a.MaxPending <= 0 {
		a.MaxPending = 32
	}
	if a.HelloTimeout <= 0 {
		a.HelloTimeout = 10 * time.Second
	}
	if a.Log == nil {
		a.Log = slog.Default()
	}
	defer a.wg.Wait()
	backoff := time.Duration(0)
	refused := 0
	var lastRefusalLog time.Time
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			a.Log.Error("worker port: accept failed; retrying", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		a.mu.Lock()
		full := a.pending >= a.MaxPending
		if !full {
			a.pending++
		}
		a.mu.Unlock()
		if full {
			c.Close()
			refused++
			if time.Since(lastRefusalLog) > 10*time.Second {
				a.Log.Warn("worker port: too many unauthenticated connections; refusing new ones",
					"max_pending", a.MaxPending, "refused_since_last_log", refused, "last_remote", c.RemoteAddr().String())
				refused, lastRefusalLog = 0, time.Now()
			}
			continue
		}
		a.wg.Add(1)
		go func() {
			c.SetDeadline(time.Now().Add(a.HelloTimeout))
			pc, h, err := ServerHandshake(c, c.RemoteAddr(), a.Keys)
			a.mu.Lock()
			a.pending--
			a.mu.Unlock()
			a.wg.Done()
			if err != nil {
				a.Log.Warn("refused worker connection", "remote", c.RemoteAddr().String(), "worker", h.WorkerID, "err", err)
				c.Close()
				return
			}
			c.SetDeadline(time.Time{})
			a.Handle(c, pc, h)
		}()
	}
}

// Pending is the number of connections in the handshake now.
func (a *Acceptor) Pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pending
}
