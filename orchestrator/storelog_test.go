package orchestrator

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// crash stops s as a killed mforch would leave it: the logs not copied
// into bbolt, nothing flushed. A checkpoint under way ends first (its
// bbolt transaction is atomic: before or after it are both covered).
func (s *BoltStore) crash() {
	if s.wal != nil {
		s.wal.mu.Lock()
		ch := s.wal.ckpt
		s.wal.mu.Unlock()
		if ch != nil {
			<-ch
		}
		s.wal.close()
	}
	s.db.Close()
}

// logBase is recent: retention prunes finished records a month old.
var logBase = time.Now().Add(-time.Hour).Truncate(time.Second)

func logInv(i int) *Invocation {
	return &Invocation{ID: fmt.Sprintf("%08d", i), Function: "f", Args: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)),
		Queued: logBase.Add(time.Duration(i) * time.Millisecond), done: make(chan struct{})}
}

// TestLogSurvivesCrash: what was committed to the log is there after a
// crash, though never copied into bbolt: pending invocations (with their
// sealed secrets) to run again, finished ones with their results; the
// log is started over after the replay.
func TestLogSurvivesCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := logInv(1), logInv(2), logInv(3)
	c.Secrets = map[string][]byte{"token": []byte("s3cr3t")}
	if err := s.Commit([]StoreWrite{{Invocation: a}, {Invocation: b}}); err != nil {
		t.Fatal(err)
	}
	a.Result, a.Finished = json.RawMessage(`"A"`), a.Queued.Add(time.Second)
	if err := s.Commit([]StoreWrite{{Invocation: a, Finished: true}, {Invocation: c}}); err != nil {
		t.Fatal(err)
	}
	s.crash()

	log := &errorLog{}
	s, err = OpenBoltStore(path, BoltOptions{Log: slog.New(log)})
	if err != nil {
		t.Fatal(err)
	}
	pending, err := s.Pending()
	if err != nil || len(pending) != 2 || pending[0].ID != b.ID || pending[1].ID != c.ID ||
		string(pending[1].Secrets["token"]) != "s3cr3t" || string(pending[0].Args) != `{"n":2}` {
		t.Fatalf("pending after the crash: %+v, %v; want %s and %s (with its secret)", pending, err, b.ID, c.ID)
	}
	got, ok, err := s.Get(a.ID)
	if err != nil || !ok || string(got.Result) != `"A"` || got.Finished.IsZero() {
		t.Fatalf("finished after the crash: %+v %v %v", got, ok, err)
	}
	if log.count() != 0 {
		t.Errorf("error lines: %v", log.msgs)
	}
	// The replay is in bbolt and the logs are empty: another crash and
	// open replays nothing and finds the same.
	s.crash()
	s, err = OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.wal.logs[0].Frames())+len(s.wal.logs[1].Frames()) != 0 {
		t.Error("the logs were not started over after the replay")
	}
	if pending, _ := s.Pending(); len(pending) != 2 {
		t.Errorf("%d pending after the second open, want 2", len(pending))
	}
}

// TestLogTornLastCommit: a commit the crash cut short (its frame damaged)
// is missing whole; every commit before it is there whole.
func TestLogTornLastCommit(t *testing.T) {
	for _, damage := range []string{"flip", "truncate"} {
		t.Run(damage, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "q.db")
			s, err := OpenBoltStore(path)
			if err != nil {
				t.Fatal(err)
			}
			for g := 0; g < 5; g++ {
				var w []StoreWrite
				for i := 0; i < 3; i++ {
					w = append(w, StoreWrite{Invocation: logInv(g*3 + i)})
				}
				if err := s.Commit(w); err != nil {
					t.Fatal(err)
				}
			}
			active := logPaths(path)[s.wal.active]
			end := s.wal.logs[s.wal.active].Len()
			s.crash()
			switch damage {
			case "flip":
				f, _ := os.OpenFile(active, os.O_RDWR, 0)
				f.WriteAt([]byte{0xff}, end-3)
				f.Close()
			case "truncate":
				os.Truncate(active, end-3)
			}
			s, err = OpenBoltStore(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			pending, err := s.Pending()
			if err != nil || len(pending) != 12 {
				t.Fatalf("%d pending, %v; want the 12 of the four whole commits", len(pending), err)
			}
			for i, inv := range pending {
				if inv.ID != logInv(i).ID {
					t.Errorf("pending[%d] = %s, want %s", i, inv.ID, logInv(i).ID)
				}
			}
		})
	}
}

// TestLogCheckpoints: with a small log, commits cross many checkpoints
// while readers look records up; every committed write is found, as new
// as committed or newer, all along and after a crash at a random point.
func TestLogCheckpoints(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	s, err := OpenBoltStore(path, BoltOptions{Retention: Retention{Max: 1_000_000}})
	if err != nil {
		t.Fatal(err)
	}
	s.wal.full = 8 << 10 // a checkpoint every ~40 commits
	const n = 1200
	rng := rand.New(rand.NewSource(1))
	invs := make([]*Invocation, n)
	// committed[i]: 0 nothing, 1 pending, 2 finished (on disk).
	committed := make([]atomic.Int32, n)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	var readErr atomic.Value
	for r := 0; r < 2; r++ {
		readers.Add(1)
		go func(seed int64) {
			defer readers.Done()
			rr := rand.New(rand.NewSource(seed))
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := rr.Intn(n)
				want := committed[i].Load()
				if want == 0 {
					continue
				}
				inv, ok, err := s.Get(fmt.Sprintf("%08d", i))
				if err != nil || !ok {
					readErr.Store(fmt.Errorf("%08d committed (state %d) but not found: %v", i, want, err))
					return
				}
				if want == 2 && inv.Finished.IsZero() {
					readErr.Store(fmt.Errorf("%08d committed finished, read back pending", i))
					return
				}
			}
		}(int64(r))
	}
	next, crashAt := 0, 300+rng.Intn(200)
	var open []int
	for c := 0; c < crashAt; c++ {
		var w []StoreWrite
		var states []int32
		var ids []int
		for k := rng.Intn(6); k >= 0; k-- {
			if len(open) > 0 && rng.Intn(2) == 0 {
				j := rng.Intn(len(open))
				i := open[j]
				open = append(open[:j], open[j+1:]...)
				invs[i].Finished, invs[i].Result = logBase.Add(time.Minute), json.RawMessage(`"ok"`)
				w = append(w, StoreWrite{Invocation: invs[i], Finished: true})
				states, ids = append(states, 2), append(ids, i)
			} else if next < n {
				invs[next] = logInv(next)
				w = append(w, StoreWrite{Invocation: invs[next]})
				states, ids = append(states, 1), append(ids, next)
				open = append(open, next)
				next++
			}
		}
		if len(w) == 0 {
			continue
		}
		if err := s.Commit(w); err != nil {
			t.Fatal(err)
		}
		for k, i := range ids {
			committed[i].Store(states[k])
		}
	}
	close(stop)
	readers.Wait()
	if err, _ := readErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	checkpoints := s.wal.logs[0].Epoch() + s.wal.logs[1].Epoch()
	if checkpoints < 6 {
		t.Fatalf("epochs %d and %d: too few checkpoints for the test to mean anything", s.wal.logs[0].Epoch(), s.wal.logs[1].Epoch())
	}
	s.crash()
	s, err = OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pending, err := s.Pending()
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != len(open) {
		t.Errorf("%d pending after the crash, want %d", len(pending), len(open))
	}
	for i := 0; i < next; i++ {
		inv, ok, err := s.Get(fmt.Sprintf("%08d", i))
		if err != nil || !ok {
			t.Fatalf("%08d lost in the crash: %v", i, err)
		}
		if (committed[i].Load() == 2) == inv.Finished.IsZero() {
			t.Errorf("%08d: finished %v, committed state %d", i, !inv.Finished.IsZero(), committed[i].Load())
		}
	}
}

// TestLogHeaderDamaged: a log whose header does not check is moved aside,
// logged; the database and the other log still open.
func TestLogHeaderDamaged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit([]StoreWrite{{Invocation: logInv(1)}}); err != nil {
		t.Fatal(err)
	}
	s.Close() // in bbolt
	f, _ := os.OpenFile(logPaths(path)[0], os.O_RDWR, 0)
	f.WriteAt([]byte("XX"), 0)
	f.Close()
	log := &errorLog{}
	s, err = OpenBoltStore(path, BoltOptions{Log: slog.New(log)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if log.count() != 1 {
		t.Errorf("%d error lines, want 1 (log moved aside)", log.count())
	}
	aside, _ := filepath.Glob(logPaths(path)[0] + ".damaged-*")
	if len(aside) != 1 {
		t.Errorf("moved aside: %v", aside)
	}
	if pending, _ := s.Pending(); len(pending) != 1 {
		t.Errorf("%d pending, want 1", len(pending))
	}
}

func TestDecodeFrame(t *testing.T) {
	good := encodeFrame([]entry{{"01", []byte("a"), false}, {"02", []byte("bc"), true}})
	es, err := decodeFrame(good)
	if err != nil || len(es) != 2 || es[1].key != "02" || string(es[1].val) != "bc" || !es[1].finished || es[0].finished {
		t.Fatalf("round trip: %+v %v", es, err)
	}
	for name, b := range map[string][]byte{
		"flag":       {2, 1, '1', 1, 'a'},
		"key length": {0, 9, '1'},
		"empty key":  {0, 0, 1, 'a'},
		"no record":  {0, 1, '1'},
		"cut":        good[:len(good)-1],
	} {
		if _, err := decodeFrame(b); !errors.Is(err, errFrame) {
			t.Errorf("%s: %v, want errFrame", name, err)
		}
	}
}
