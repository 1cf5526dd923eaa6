package runtime

import (
	"errors"
	"testing"
	"time"

	"github.com/microfaas/microfaas/protocol"
)

// TestSyncClock: a job sets the worker's wall clock from the orchestrator's
// when they differ by more than clockSkew, and only then.
func TestSyncClock(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name    string
		jobTime int64
		set     bool
	}{
		{"worker in 1970", now.Add(56 * 365 * 24 * time.Hour).UnixNano(), true},
		{"worker an hour ahead", now.Add(-time.Hour).UnixNano(), true},
		{"within the skew", now.Add(100 * time.Millisecond).UnixNano(), false},
		{"no time in the job", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got time.Time
			w := &Worker{SetClock: func(t time.Time) error { got = t; return nil }}
			w.syncClock(protocol.Job{NowUnixNS: tc.jobTime})
			if tc.set != !got.IsZero() {
				t.Fatalf("clock set = %v, want %v", !got.IsZero(), tc.set)
			}
			if tc.set && got.UnixNano() != tc.jobTime {
				t.Fatalf("clock set to %v, want %v", got, time.Unix(0, tc.jobTime))
			}
		})
	}
	// A failing clock is logged, not fatal.
	w := &Worker{SetClock: func(time.Time) error { return errors.New("EPERM") }}
	w.syncClock(protocol.Job{NowUnixNS: now.Add(time.Hour).UnixNano()})
}
