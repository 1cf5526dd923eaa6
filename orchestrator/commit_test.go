package orchestrator

import (
	"encoding/json"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// gateStore is a BoltStore whose Commit waits, after entering, until the
// test releases it, and which records the invocations whose commit has
// returned.
type gateStore struct {
	*BoltStore
	entered chan int      // the number of writes of each Commit entered
	release chan struct{} // one receive lets one Commit go on
	open    chan struct{} // closed: every Commit goes on (the test ended)
	mu      sync.Mutex
	done    map[string]bool
	commits int
}

func (s *gateStore) Commit(w []StoreWrite) error {
	select {
	case s.entered <- len(w):
	case <-s.open:
	}
	select {
	case <-s.release:
	case <-s.open:
	}
	err := s.BoltStore.Commit(w)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commits++
	if err == nil {
		for _, x := range w {
			s.done[x.Invocation.ID] = true
		}
	}
	return err
}

func (s *gateStore) committed(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done[id]
}

// TestSubmitAnsweredOnlyAfterItsCommit holds the store's commits and
// checks that no Submit returns before the commit carrying its write has
// returned, while the committer gathers groups (several callers at once).
func TestSubmitAnsweredOnlyAfterItsCommit(t *testing.T) {
	bs, err := OpenBoltStore(filepath.Join(t.TempDir(), "queue.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	s := &gateStore{BoltStore: bs, entered: make(chan int, 64), release: make(chan struct{}), open: make(chan struct{}), done: map[string]bool{}}
	h := newHarness(t, 2, Config{IdleTimeout: time.Hour, Store: s})
	defer close(s.open) // before the harness's cleanup closes the orchestrator
	const callers = 16
	type answer struct {
		inv        *Invocation
		err        error
		durableYet bool // its write's commit had returned when Submit did
	}
	answers := make(chan answer, callers)
	for i := 0; i < callers; i++ {
		go func() {
			inv, err := h.orch.Submit("float_operations", json.RawMessage(`{"n":1}`), time.Minute)
			a := answer{inv: inv, err: err}
			if err == nil {
				a.durableYet = s.committed(inv.ID)
			}
			answers <- a
		}()
	}
	// The first commit is held: nobody may have an answer.
	select {
	case <-s.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no commit within 10s")
	}
	select {
	case a := <-answers:
		t.Fatalf("Submit answered (%v) while its commit was held", a.err)
	case <-time.After(50 * time.Millisecond):
	}
	// Release commits one at a time (the later ones carry the finished
	// records too) until every caller has its answer, each checked.
	got := 0
	release := time.After(30 * time.Second)
	for got < callers {
		select {
		case s.release <- struct{}{}:
		case <-s.entered:
		case a := <-answers:
			got++
			if a.err != nil {
				t.Fatalf("Submit: %v", a.err)
			}
			if !a.durableYet {
				t.Errorf("invocation %s answered before its commit returned", a.inv.ID)
			}
		case <-release:
			t.Fatalf("%d of %d callers answered in 30s", got, callers)
		}
	}
}

// TestGatherTakesWhatIsWaiting: with several turns in hand, gather takes
// the batches waiting, within maxBatch, and returns once two slices in a
// row bring nothing, long before its window; with one turn, while
// backing off, or with more than one P, it returns at once.
func TestGatherTakesWhatIsWaiting(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // gather waits only with one P
	o := &Orchestrator{commits: make(chan commitBatch, 4*maxBatch)}
	t0 := time.Now()
	if g := o.gather([]commitBatch{{turn: 1}}, maxGather); len(g) != 1 {
		t.Fatalf("one turn: gather returned %d", len(g))
	}
	if d := time.Since(t0); d >= gatherSlice {
		t.Errorf("one turn: gather waited %v, want no wait", d)
	}

	for i := 0; i < 10; i++ {
		o.commits <- commitBatch{turn: uint64(3 + i)}
	}
	t0 = time.Now()
	g := o.gather([]commitBatch{{turn: 1}, {turn: 2}}, maxGather)
	if len(g) != 12 {
		t.Fatalf("gather took %d batches, want 12", len(g))
	}
	for i, b := range g {
		if b.turn != uint64(i+1) {
			t.Fatalf("batch %d is turn %d: order lost", i, b.turn)
		}
	}
	if d := time.Since(t0); d >= maxGather {
		t.Errorf("gather waited %v with nothing more coming", d)
	}

	o.gatherSkip = 0 // a slice may have overrun on a loaded host
	for i := 0; i < maxBatch+100; i++ {
		o.commits <- commitBatch{turn: uint64(i)}
	}
	if g := o.gather([]commitBatch{{}, {}}, maxGather); len(g) != maxBatch {
		t.Errorf("gather took %d batches, want maxBatch (%d)", len(g), maxBatch)
	}
	o.gatherSkip = 1
	if g := o.gather([]commitBatch{{}, {}}, maxGather); len(g) != 2 || o.gatherSkip != 0 {
		t.Errorf("backing off, gather took %d batches (skip now %d), want 2 (0)", len(g), o.gatherSkip)
	}
	runtime.GOMAXPROCS(2)
	if g := o.gather([]commitBatch{{}, {}}, maxGather); len(g) != 2 {
		t.Errorf("with two Ps, gather took %d batches, want 2 (no wait)", len(g))
	}
}
