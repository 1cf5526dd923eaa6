package runtime

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microfaas/microfaas/protocol"
)

// orchestratorSide is how the fake orchestrator treats one connection.
type orchestratorSide func(t *testing.T, c net.Conn, keys protocol.KeyFunc)

var (
	// refuse: the dial itself fails (nothing listening yet).
	refuse orchestratorSide = nil
	// cut: accepted and closed at once, as a full worker port does.
	cut orchestratorSide = func(t *testing.T, c net.Conn, _ protocol.KeyFunc) { c.Close() }
	// dropHello: the challenge goes out, the hello is read and refused
	// (or the connection was cut just before the orchestrator read it).
	dropHello orchestratorSide = func(t *testing.T, c net.Conn, _ protocol.KeyFunc) {
		protocol.ServerHandshake(c, c.RemoteAddr(), func(string, net.Addr) ([]byte, error) {
			return nil, protocol.ErrUnknownWorker
		})
		c.Close()
	}
	// reboot: a real handshake, then the command to reboot.
	reboot orchestratorSide = func(t *testing.T, c net.Conn, keys protocol.KeyFunc) {
		defer c.Close()
		pc, _, err := protocol.ServerHandshake(c, c.RemoteAddr(), keys)
		if err != nil {
			t.Errorf("orchestrator side: %v", err)
			return
		}
		pc.Send(protocol.TypeCommand, protocol.Command{Action: protocol.CmdReboot})
		io.Copy(io.Discard, c) // until the worker hangs up
	}
)

// TestWorkerRetriesHandshake: a worker whose first attempts end in EOF (the
// worker port full of a flood's connections, issue 18 attack 6) tries
// again with backoff within its failsafe time instead of powering off; it
// gives up only when that time is spent, and never retries what a retry
// cannot mend.
func TestWorkerRetriesHandshake(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	key, err := protocol.WorkerKey(secret, "vm0")
	if err != nil {
		t.Fatal(err)
	}
	keys := protocol.ClusterKeys(secret, map[string]string{"vm0": ""})
	const failsafe = 10 * time.Second
	tests := []struct {
		name     string
		sides    []orchestratorSide // per attempt; the last repeats
		noKey    bool
		action   string
		attempts int
		slept    []time.Duration // nil: not checked
		reason   string
	}{
		{"EOF twice, then in", []orchestratorSide{cut, dropHello, reboot}, false, protocol.CmdReboot, 3,
			[]time.Duration{50 * time.Millisecond, 100 * time.Millisecond}, "told by the orchestrator"},
		{"dial refused, then in", []orchestratorSide{refuse, refuse, reboot}, false, protocol.CmdReboot, 3,
			[]time.Duration{dialRetryEvery, dialRetryEvery}, "told by the orchestrator"},
		{"EOF until the failsafe time is spent", []orchestratorSide{cut}, false, protocol.CmdPowerOff, 0, nil,
			"no session with the orchestrator"},
		{"no key: no retry", []orchestratorSide{cut}, true, protocol.CmdPowerOff, 1, []time.Duration{}, "no worker key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			var slept []time.Duration
			attempts := 0
			var sides sync.WaitGroup
			defer sides.Wait()
			w := &Worker{Config: Config{ID: "vm0", Orch: "orchestrator:1", Failsafe: failsafe}, Key: key,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: func() float64 { return 1 },
				Now: func() time.Time { return now },
				Sleep: func(_ context.Context, d time.Duration) error {
					slept = append(slept, d)
					now = now.Add(d)
					return nil
				},
				Dial: func(ctx context.Context, addr string) (net.Conn, error) {
					side := tt.sides[min(attempts, len(tt.sides)-1)]
					attempts++
					if side == nil {
						return nil, errors.New("connection refused")
					}
					worker, orch := net.Pipe()
					sides.Add(1)
					go func() { defer sides.Done(); side(t, orch, keys) }()
					return worker, nil
				}}
			if tt.noKey {
				w.Key = nil
			}
			out := w.Run(context.Background())
			if out.Action != tt.action || !strings.Contains(out.Reason, tt.reason) {
				t.Fatalf("outcome %+v, want %s (%q)", out, tt.action, tt.reason)
			}
			if tt.attempts > 0 && attempts != tt.attempts {
				t.Errorf("%d attempts, want %d", attempts, tt.attempts)
			}
			if tt.slept != nil && !slices.Equal(slept, tt.slept) {
				t.Errorf("waited %v, want %v", slept, tt.slept)
			}
			var total time.Duration
			for _, d := range slept {
				total += d
				if d > handshakeBackoffMax {
					t.Errorf("one wait of %s, longer than %s", d, handshakeBackoffMax)
				}
			}
			if total > failsafe {
				t.Errorf("retried for %s, past the failsafe time %s", total, failsafe)
			}
			if tt.reason == "no session with the orchestrator" && attempts < 5 {
				t.Errorf("gave up after %d attempts in %s", attempts, total)
			}
		})
	}
}
