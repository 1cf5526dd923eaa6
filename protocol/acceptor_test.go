package protocol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// records counts log records by level.
type records struct {
	mu     sync.Mutex
	counts map[slog.Level]int
	logged chan struct{} // closed on the next record; nil while nobody waits
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.counts[rec.Level]++
	if r.logged != nil {
		close(r.logged)
		r.logged = nil
	}
	r.mu.Unlock()
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }
func (r *records) count(l slog.Level) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[l]
}

// waitUntil checks cond now and after every log record (the acceptor logs
// each refusal, each failed handshake after releasing its slot, and each
// accept error) and reports whether it held within timeout.
func (r *records) waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		if r.logged == nil {
			r.logged = make(chan struct{})
		}
		next := r.logged
		r.mu.Unlock()
		if cond() {
			return true
		}
		select {
		case <-next:
		case <-deadline.C:
			return cond()
		}
	}
}

// acceptor serves a cluster of vm0 and vm1 on loopback; sessions get a
// poweroff command at once, and are reported on the returned channel.
func acceptor(t *testing.T, maxPending int, helloTimeout time.Duration) (*Acceptor, string, chan string, *records) {
	t.Helper()
	logs := &records{counts: map[slog.Level]int{}}
	a, addr, sessions := acceptorLog(t, maxPending, helloTimeout, logs)
	return a, addr, sessions, logs
}

// acceptorLog is acceptor logging to h.
func acceptorLog(t *testing.T, maxPending int, helloTimeout time.Duration, h slog.Handler) (*Acceptor, string, chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sessions := make(chan string, 10)
	a := &Acceptor{Keys: ClusterKeys(testSecret, map[string]string{"vm0": "", "vm1": ""}),
		MaxPending: maxPending, HelloTimeout: helloTimeout, Log: slog.New(h),
		Handle: func(c net.Conn, pc *Conn, h Hello) {
			defer c.Close()
			pc.Send(TypeCommand, Command{Action: CmdPowerOff})
			sessions <- h.WorkerID
		}}
	done := make(chan error, 1)
	go func() { done <- a.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its listener closed")
		}
	})
	return a, ln.Addr().String(), sessions
}

// worker connects as id with its key and waits for the orchestrator's command.
func worker(t *testing.T, addr, id string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	return handshake(t, c, id)
}

// handshake says hello on c as id with its key and waits for the
// orchestrator's command; it closes c.
func handshake(t *testing.T, c net.Conn, id string) error {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	pc, err := ClientHandshake(c, key(t, id), Hello{WorkerID: id})
	if err != nil {
		return err
	}
	var cmd Command
	return pc.Expect(TypeCommand, &cmd)
}

// TestGarbageFlood: idle and garbage connections hold at most MaxPending
// handshakes, each for at most HelloTimeout; then a worker gets in.
func TestGarbageFlood(t *testing.T) {
	const maxPending = 8
	a, addr, sessions, logs := acceptor(t, maxPending, 500*time.Millisecond)
	var conns []net.Conn
	for i := 0; i < 60; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			c.Write([]byte("GET / HTTP/1.0\r\n")) // garbage without a newline-terminated frame end
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// The cap holds at every log record, until the refusal is logged.
	capped := func() bool {
		if p := a.Pending(); p > maxPending {
			t.Fatalf("%d unauthenticated connections held, cap %d", p, maxPending)
		}
		return true
	}
	if !logs.waitUntil(5*time.Second, func() bool { return capped() && logs.count(slog.LevelWarn) > 0 }) {
		t.Error("refusing the flood was not logged")
	}
	// The held ones time out, each logged once its slot is free; a real
	// worker then gets in.
	if !logs.waitUntil(5*time.Second, func() bool { return capped() && a.Pending() == 0 }) {
		t.Fatalf("%d handshakes still held 5 s after the flood; HelloTimeout is 500 ms", a.Pending())
	}
	// From its own address, as a worker is: flood connections still in
	// the listen backlog come from 127.0.0.1 and may take that source's
	// few slots again.
	if err := workerFrom(t, "127.0.0.2", addr, "vm0"); err != nil {
		t.Fatalf("a worker could not connect after the flood: %v", err)
	}
	if id := <-sessions; id != "vm0" {
		t.Fatalf("session for %q", id)
	}
}

// TestAcceptErrorsRetried: with the process out of file descriptors the
// port logs and retries instead of stopping; workers get in again once
// descriptors are free.
func TestAcceptErrorsRetried(t *testing.T) {
	_, addr, sessions, logs := acceptor(t, 32, 2*time.Second)
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	low := orig
	low.Cur = uint64(len(fds) + 16)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("cannot lower the descriptor limit: %v", err)
	}
	var conns []net.Conn
	for i := 0; i < 64; i++ {
		// From many loopback sources: the acceptor holds at most a few
		// pending handshakes per source and closes the rest, which would
		// free the descriptors this test needs it to run out of.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i))}, Timeout: time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			break // our side is out of descriptors too
		}
		conns = append(conns, c)
	}
	// Let the acceptor hit EMFILE a few times.
	logs.waitUntil(5*time.Second, func() bool { return logs.count(slog.LevelError) > 0 })
	for _, c := range conns {
		c.Close()
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	if logs.count(slog.LevelError) == 0 {
		t.Fatal("no accept error was logged: the descriptor limit was never hit, so this test proved nothing")
	}
	if err := worker(t, addr, "vm1"); err != nil {
		t.Fatalf("the worker port did not recover: %v", err)
	}
	if id := <-sessions; id != "vm1" {
		t.Fatalf("session for %q", id)
	}
}

// dialFrom connects to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// admitted reports whether the acceptor took c into the handshake (it
// sent its challenge) rather than closing it.
func admitted(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 1)
	_, err := c.Read(b)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the acceptor neither challenged nor closed a connection within 5 s")
	}
	return err == nil
}

// workerFrom is worker, connecting from the loopback address src.
func workerFrom(t *testing.T, src, addr, id string) error {
	return handshake(t, dialFrom(t, src, addr), id)
}

// TestHandshakeFloods: 40 idle connections that never say hello (issue 18,
// attack 6: a function, or anyone on the network, holding the worker
// port's handshake slots) do not keep a real worker out, whether they come
// from one address or from 40; the held connections would stay a minute.
func TestHandshakeFloods(t *testing.T) {
	tests := []struct {
		name       string
		source     func(i int) string
		maxHeldOne int // most handshakes one flood source may hold
	}{
		{"one source", func(int) string { return "127.0.0.1" }, 4},
		{"40 sources", func(i int) string { return fmt.Sprintf("127.0.1.%d", i+1) }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, addr, sessions, logs := acceptor(t, 0, time.Minute) // defaults: 32 pending, 4 per source
			held := 0
			for i := 0; i < 40; i++ {
				c := dialFrom(t, tt.source(i), addr)
				defer c.Close()
				if admitted(t, c) {
					held++
				}
			}
			if p := a.Pending(); p > 32 {
				t.Fatalf("%d handshakes pending, cap 32", p)
			}
			if tt.name == "one source" && held > tt.maxHeldOne {
				t.Errorf("one source holds %d handshakes, want at most %d", held, tt.maxHeldOne)
			}
			if err := workerFrom(t, "127.0.0.2", addr, "vm0"); err != nil {
				t.Fatalf("a real worker's handshake failed during the flood: %v", err)
			}
			if id := <-sessions; id != "vm0" {
				t.Fatalf("session for %q", id)
			}
			if logs.count(slog.LevelWarn) == 0 {
				t.Error("the flood was not logged")
			}
		})
	}
}

func TestSource(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 2}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 3}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:bbbb::9"), Port: 3}, "2001:db8:1:2::/64"},
	}
	for _, tt := range tests {
		if got := Source(tt.addr); got != tt.want {
			t.Errorf("Source(%s) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

// errLog keeps the err attribute of every record.
type errLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *errLog) Handle(_ context.Context, rec slog.Record) error {
	rec.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && a.Key == "err" {
			l.mu.Lock()
			l.errs = append(l.errs, err)
			l.mu.Unlock()
		}
		return true
	})
	return nil
}
func (l *errLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *errLog) WithGroup(string) slog.Handler      { return l }
func (l *errLog) has(target error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, err := range l.errs {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// socketPair is a connected pair of unix stream sockets as net.Conns, made
// the way the QEMU controller makes a worker's port channel.
func socketPair(t *testing.T) (host, guest net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		if conns[i], err = net.FileConn(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	t.Cleanup(func() { conns[0].Close(); conns[1].Close() })
	return conns[0], conns[1]
}

// TestServeConn: a worker's own channel carries only its own session,
// with the same handshake as the port; it is not subject to (and not
// dropped by) the bounds on strangers, and it is bounded in time.
func TestServeConn(t *testing.T) {
	tests := []struct {
		name      string
		hello     string // the id the client claims ("": says nothing)
		keyOf     string // whose key it holds
		flood     bool   // the TCP port full of strangers' handshakes first
		timeout   time.Duration
		session   bool
		serverErr error // what the acceptor logs, when refused
	}{
		{"its worker", "vm0", "vm0", false, 5 * time.Second, true, nil},
		{"its worker while the port is flooded", "vm0", "vm0", true, 5 * time.Second, true, nil},
		{"another worker with that worker's key", "vm1", "vm1", false, 5 * time.Second, false, ErrOtherWorker},
		{"its id without its key", "vm0", "vm1", false, 5 * time.Second, false, ErrBadMAC},
		{"silent past its timeout", "", "", false, 200 * time.Millisecond, false, os.ErrDeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &errLog{}
			a, addr, sessions := acceptorLog(t, 0, time.Minute, logs)
			if tt.flood {
				for i := 0; i < 40; i++ {
					c := dialFrom(t, fmt.Sprintf("127.0.1.%d", i+1), addr)
					defer c.Close()
					admitted(t, c)
				}
				if p := a.Pending(); p != 32 {
					t.Fatalf("flood holds %d handshakes, want 32", p)
				}
			}
			host, guest := socketPair(t)
			a.ServeConn(host, "vm0", tt.timeout)
			var err error
			if tt.hello != "" {
				guest.SetDeadline(time.Now().Add(5 * time.Second))
				var pc *Conn
				pc, err = ClientHandshake(guest, key(t, tt.keyOf), Hello{WorkerID: tt.hello})
				if err == nil {
					var cmd Command
					err = pc.Expect(TypeCommand, &cmd)
				}
			} else {
				// Read the challenge, then wait for the channel to close.
				guest.SetDeadline(time.Now().Add(5 * time.Second))
				_, err = io.ReadAll(guest)
				if err == nil {
					err = io.EOF
				}
			}
			if tt.session {
				if err != nil {
					t.Fatalf("worker side: %v", err)
				}
				if id := <-sessions; id != "vm0" {
					t.Fatalf("session for %q", id)
				}
				return
			}
			if err == nil {
				t.Fatal("the session went through")
			}
			select {
			case id := <-sessions:
				t.Fatalf("session for %q", id)
			default:
			}
			deadline := time.Now().Add(5 * time.Second)
			for !logs.has(tt.serverErr) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if !logs.has(tt.serverErr) {
				t.Fatalf("acceptor logged %v, want %v", logs.errs, tt.serverErr)
			}
		})
	}
}
