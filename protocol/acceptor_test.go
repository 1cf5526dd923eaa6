package protocol

import (
	"context"
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
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.counts[rec.Level]++
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

// acceptor serves a cluster of vm0 and vm1 on loopback; sessions get a
// poweroff command at once, and are reported on the returned channel.
func acceptor(t *testing.T, maxPending int, helloTimeout time.Duration) (*Acceptor, string, chan string, *records) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &records{counts: map[slog.Level]int{}}
	sessions := make(chan string, 10)
	a := &Acceptor{Keys: ClusterKeys(testSecret, map[string]string{"vm0": "", "vm1": ""}),
		MaxPending: maxPending, HelloTimeout: helloTimeout, Log: slog.New(logs),
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
	return a, ln.Addr().String(), sessions, logs
}

// worker connects as id with its key and waits for the orchestrator's command.
func worker(t *testing.T, addr, id string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
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
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if p := a.Pending(); p > maxPending {
			t.Fatalf("%d unauthenticated connections held, cap %d", p, maxPending)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if logs.count(slog.LevelWarn) == 0 {
		t.Error("refusing the flood was not logged")
	}
	// The held ones time out; a real worker then gets in.
	var err error
	for try := 0; try < 50; try++ {
		if err = worker(t, addr, "vm0"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
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
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break // our side is out of descriptors too
		}
		conns = append(conns, c)
	}
	// Let the acceptor hit EMFILE a few times.
	deadline := time.Now().Add(5 * time.Second)
	for logs.count(slog.LevelError) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
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
