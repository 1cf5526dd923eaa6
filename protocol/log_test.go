package protocol

import (
	"encoding/json"
	"errors"
	"net"
	"sync"
	"testing"
)

// TestLogFramesConcurrentSends: a worker's log shipper and its session send
// at once; every frame arrives whole and in sequence, and the worker knows
// from the challenge whether log frames are taken.
func TestLogFramesConcurrentSends(t *testing.T) {
	for _, accepts := range [][]string{{FeatureLog}, nil} {
		secret := []byte("0123456789abcdef0123456789abcdef")
		key, _ := WorkerKey(secret, "w1")
		a, b := net.Pipe()
		type srv struct {
			pc  *Conn
			err error
		}
		sc := make(chan srv, 1)
		go func() {
			pc, _, err := ServerHandshakeAccepts(b, b.RemoteAddr(), ClusterKeys(secret, map[string]string{"w1": ""}), accepts)
			sc <- srv{pc, err}
		}()
		cc, err := ClientHandshake(a, key, Hello{WorkerID: "w1"})
		if err != nil {
			t.Fatal(err)
		}
		s := <-sc
		if s.err != nil {
			t.Fatal(s.err)
		}
		if got := cc.Accepts(FeatureLog); got != (accepts != nil) {
			t.Errorf("challenge accepts %v: Accepts(log) = %v", accepts, got)
		}
		const senders, each = 4, 50
		var wg sync.WaitGroup
		for i := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range each {
					if err := cc.Send(TypeLog, LogBatch{Lines: []LogLine{{Source: LogKernel, Text: "x"}}, Dropped: i*each + j}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		seen := map[int]bool{}
		for range senders * each {
			typ, body, err := s.pc.Receive()
			if err != nil || typ != TypeLog {
				t.Fatalf("receive: %s, %v", typ, err)
			}
			var lb LogBatch
			if err := json.Unmarshal(body, &lb); err != nil {
				t.Fatal(err)
			}
			seen[lb.Dropped] = true
		}
		wg.Wait()
		if len(seen) != senders*each {
			t.Errorf("%d distinct frames, want %d", len(seen), senders*each)
		}
		a.Close()
		b.Close()
	}
}

func TestLogBatchCheck(t *testing.T) {
	line := func(n int) LogLine { return LogLine{Source: LogKernel, Text: string(make([]byte, n))} }
	many := func(n, size int) []LogLine {
		var ls []LogLine
		for range n {
			ls = append(ls, line(size))
		}
		return ls
	}
	for _, tc := range []struct {
		name string
		b    LogBatch
		ok   bool
	}{
		{"empty", LogBatch{}, true},
		{"at the bounds", LogBatch{Lines: many(MaxLogBatch/MaxLogLine, MaxLogLine), Dropped: 5}, true},
		{"a long line", LogBatch{Lines: []LogLine{line(MaxLogLine + 1)}}, false},
		{"too much text", LogBatch{Lines: many(MaxLogBatch/MaxLogLine+1, MaxLogLine)}, false},
		{"too many lines", LogBatch{Lines: many(MaxLogLines+1, 0)}, false},
		{"negative drops", LogBatch{Dropped: -1}, false},
	} {
		if err := tc.b.Check(); (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrLogBatch)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
