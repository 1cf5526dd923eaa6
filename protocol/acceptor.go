package protocol

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Acceptor serves the orchestrator's worker port: it accepts connections
// until the listener is closed, runs the version-2 handshake on each, and
// hands authenticated sessions to a handler. It bounds what strangers can
// cost: each has HelloTimeout to authenticate and MaxHelloFrame bytes to do
// it in; one source address (an IPv6 /64 counts as one) may hold at most
// MaxPendingPerSource handshakes, so a flood from one place (a function
// re-dialling the port from its worker, a host on the network) holds only
// its own slots; and at most MaxPending may be in the handshake at once:
// when they are all taken, a connection from a source holding fewer than
// the busiest one takes the busiest source's oldest slot, so a flood from
// many addresses cannot lock out a worker either. Accept errors (out of
// file descriptors, for one) are logged and retried with backoff: the port
// never stops silently.
//
// QEMU workers on user networking all reach the port from the host: the
// power controller gives each its own loopback source address
// (power.RelaySource), so there too a source is a worker. Most of them
// have no TCP connection at all: their session comes over a virtio-serial
// port the power controller made for that one VM, handed in by ServeConn.
type Acceptor struct {
	Keys KeyFunc
	// Handle runs one authenticated session. It owns c: it closes it when
	// the session is over (possibly after it returns, once its writer has
	// sent what is queued).
	Handle func(c net.Conn, pc *Conn, h Hello)
	// MaxPending bounds unauthenticated connections (default 32).
	MaxPending int
	// MaxPendingPerSource bounds those of one source address (default 4).
	MaxPendingPerSource int
	// HelloTimeout bounds the handshake (default 10 s).
	HelloTimeout time.Duration
	// Accepts are the optional frames the sessions take (FeatureLog):
	// Handle must read them (ServerHandshakeAccepts).
	Accepts []string
	Log     *slog.Logger

	mu      sync.Mutex
	pending []*pendingConn // oldest first
	wg      sync.WaitGroup
	once    sync.Once // the defaults
}

// defaults fills the unset bounds, once: Serve and ServeConn may run at
// the same time.
func (a *Acceptor) defaults() {
	a.once.Do(func() {
		if a.MaxPending <= 0 {
			a.MaxPending = 32
		}
		if a.MaxPendingPerSource <= 0 {
			a.MaxPendingPerSource = 4
		}
		if a.HelloTimeout <= 0 {
			a.HelloTimeout = 10 * time.Second
		}
		if a.Log == nil {
			a.Log = slog.Default()
		}
	})
}

// pendingConn is one connection in the handshake.
type pendingConn struct {
	c      net.Conn
	source string
}

// Backoff bounds for accept errors.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// Source is the key pending handshakes are counted under: the remote IP
// address, an IPv6 address by its /64 (one host has a whole /64 to dial
// from), or the address as a string for other kinds of connection.
func Source(remote net.Addr) string {
	var ip netip.Addr
	switch a := remote.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if ap, err := netip.ParseAddrPort(remote.String()); err == nil {
			ip = ap.Addr()
		}
	}
	ip = ip.Unmap()
	switch {
	case ip.Is4():
		return ip.String()
	case ip.Is6():
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return remote.String()
}

// Serve accepts on ln until it is closed; then it returns nil once every
// handshake under way has ended (sessions are Handle's to end).
func (a *Acceptor) Serve(ln net.Listener) error {
	a.defaults()
	defer a.wg.Wait()
	backoff := time.Duration(0)
	refused, evicted := 0, 0
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
		p := &pendingConn{c: c, source: Source(c.RemoteAddr())}
		victim, ok := a.admit(p)
		if victim != nil {
			victim.c.Close() // its handshake fails and releases nothing more
			evicted++
		}
		if !ok {
			c.Close()
			refused++
		}
		if (victim != nil || !ok) && time.Since(lastRefusalLog) > 10*time.Second {
			a.Log.Warn("worker port: too many unauthenticated connections; refusing or dropping the busiest source's",
				"max_pending", a.MaxPending, "max_pending_per_source", a.MaxPendingPerSource,
				"refused_since_last_log", refused, "dropped_since_last_log", evicted, "last_source", p.source)
			refused, evicted, lastRefusalLog = 0, 0, time.Now()
		}
		if !ok {
			continue
		}
		a.wg.Add(1)
		go func() {
			c.SetDeadline(time.Now().Add(a.HelloTimeout))
			pc, h, err := ServerHandshakeAccepts(c, c.RemoteAddr(), a.Keys, a.Accepts)
			a.release(p)
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

// ServeConn runs the handshake on c, a channel that belongs to worker
// alone (a QEMU worker's virtio-serial port, made by its power controller
// for that one VM), in its own goroutine, and hands the session to Handle.
// A hello that names any other worker is refused (ErrOtherWorker), so a
// channel cannot be used to pass for another worker even with its key.
// c counts against no bound of strangers: only the power controller makes
// such channels, one per running VM, and it is the worker's only way in,
// so it is never dropped for another's sake. timeout bounds the handshake
// from now: it includes the VM's boot (0: HelloTimeout).
func (a *Acceptor) ServeConn(c net.Conn, worker string, timeout time.Duration) {
	a.defaults()
	if timeout <= 0 {
		timeout = a.HelloTimeout
	}
	keys := func(id string, remote net.Addr) ([]byte, error) {
		if id != worker {
			return nil, fmt.Errorf("%w: %q on the channel of %q", ErrOtherWorker, id, worker)
		}
		return a.Keys(id, remote)
	}
	go func() {
		c.SetDeadline(time.Now().Add(timeout))
		pc, h, err := ServerHandshakeAccepts(c, c.RemoteAddr(), keys, a.Accepts)
		if err != nil {
			if h.WorkerID == "" && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
				// The VM ended (powered off, killed) before its hello.
				a.Log.Debug("worker's channel closed before its hello", "worker", worker, "err", err)
			} else {
				a.Log.Warn("refused worker session on its own channel", "worker", worker, "claimed", h.WorkerID, "err", err)
			}
			c.Close()
			return
		}
		c.SetDeadline(time.Time{})
		a.Handle(c, pc, h)
	}()
}

// admit decides whether p may start its handshake. A source at its own
// bound is refused. When every slot is taken, the source holding the most
// gives up its oldest one (returned as victim, already released), if it
// holds more than p's source; otherwise p is refused.
func (a *Acceptor) admit(p *pendingConn) (victim *pendingConn, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	counts := map[string]int{}
	for _, q := range a.pending {
		counts[q.source]++
	}
	if counts[p.source] >= a.MaxPendingPerSource {
		return nil, false
	}
	if len(a.pending) >= a.MaxPending {
		busiest := -1
		for i, q := range a.pending { // oldest first: ties go to the oldest
			if busiest < 0 || counts[q.source] > counts[a.pending[busiest].source] {
				busiest = i
			}
		}
		if counts[a.pending[busiest].source] <= counts[p.source] {
			return nil, false
		}
		victim = a.pending[busiest]
		a.pending = append(a.pending[:busiest], a.pending[busiest+1:]...)
	}
	a.pending = append(a.pending, p)
	return victim, true
}

// release ends p's handshake (a no-op for one already evicted).
func (a *Acceptor) release(p *pendingConn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, q := range a.pending {
		if q == p {
			a.pending = append(a.pending[:i], a.pending[i+1:]...)
			return
		}
	}
}

// Pending is the number of connections in the handshake now.
func (a *Acceptor) Pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending)
}
