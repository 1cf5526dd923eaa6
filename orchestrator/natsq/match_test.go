package natsq

import (
	"fmt"
	"math/rand"
	"testing"
)

func TestMatchingMore(t *testing.T) {
	type ask struct {
		function  string
		want, got int
	}
	cases := []struct {
		name      string
		workers   int
		runners   map[string][]int // "" is every worker not failed
		load      map[string]int
		asks      []ask // in order: each one's matches stay for the next
		unmatched int
	}{
		{name: "partial overlap: f1 held goes to the worker f2 lacks", workers: 3,
			runners: map[string][]int{"f1": {0, 1}, "f2": {1, 2}, "": {0, 1, 2}},
			load:    map[string]int{"f1": 1},
			asks:    []ask{{"f2", 9, 2}, {"f1", 9, 0}}},
		{name: "partial overlap, nothing held: f1 first takes both of its workers", workers: 3,
			runners: map[string][]int{"f1": {0, 1}, "f2": {1, 2}, "": {0, 1, 2}},
			asks:    []ask{{"f1", 9, 2}, {"f2", 9, 1}}},
		{name: "partial overlap: the load moves along a chain", workers: 4,
			runners: map[string][]int{"f1": {0, 1}, "f2": {1, 2}, "f3": {2, 3}, "": {0, 1, 2, 3}},
			load:    map[string]int{"f2": 1, "f3": 1},
			asks:    []ask{{"f1", 9, 2}, {"f3", 9, 0}}},
		{name: "want bounds", workers: 3,
			runners: map[string][]int{"f1": {0, 1, 2}, "": {0, 1, 2}},
			asks:    []ask{{"f1", 2, 2}, {"f1", 0, 0}, {"f1", 5, 1}}},
		{name: "disjoint", workers: 4,
			runners: map[string][]int{"f1": {0, 1}, "f2": {2, 3}, "": {0, 1, 2, 3}},
			load:    map[string]int{"f1": 1, "f2": 2},
			asks:    []ask{{"f2", 9, 0}, {"f1", 9, 1}}},
		{name: "nested: the wider function's load leaves the narrow one a worker", workers: 4,
			runners: map[string][]int{"f1": {0, 1, 2, 3}, "f2": {0, 1}, "": {0, 1, 2, 3}},
			load:    map[string]int{"f1": 3},
			asks:    []ask{{"f2", 9, 1}, {"f1", 9, 0}}},
		{name: "nested: the narrow function's load", workers: 4,
			runners: map[string][]int{"f1": {0, 1, 2, 3}, "f2": {0, 1}, "": {0, 1, 2, 3}},
			load:    map[string]int{"f2": 2},
			asks:    []ask{{"f2", 9, 0}, {"f1", 9, 2}}},
		{name: "full: nothing more", workers: 2,
			runners: map[string][]int{"f1": {0, 1}, "f2": {0, 1}, "": {0, 1}},
			load:    map[string]int{"f1": 1, "f2": 1},
			asks:    []ask{{"f1", 9, 0}, {"f2", 9, 0}, {"", 9, 0}}},
		{name: "a failed worker leaves load unmatched: no more than spare", workers: 4,
			// Worker 0 ran f1 and failed (in no set): 2 f1 held, 1 runner.
			runners:   map[string][]int{"f1": {1}, "f2": {2, 3}, "": {1, 2, 3}},
			load:      map[string]int{"f1": 2},
			asks:      []ask{{"f2", 9, 1}, {"f2", 9, 0}},
			unmatched: 1},
		{name: "a failed worker: no spare at all", workers: 3,
			runners:   map[string][]int{"f1": {1}, "f2": {1, 2}, "": {1, 2}},
			load:      map[string]int{"f1": 2},
			asks:      []ask{{"f2", 9, 0}},
			unmatched: 1},
		{name: "held load of a function not asked about has no runners", workers: 2,
			runners:   map[string][]int{"f1": {0, 1}, "": {0, 1}},
			load:      map[string]int{"gone": 1},
			asks:      []ask{{"f1", 9, 1}, {"unknown", 9, 0}},
			unmatched: 1},
		{name: "legacy any-function load makes way for a narrow function", workers: 3,
			runners: map[string][]int{"f1": {0}, "": {0, 1, 2}},
			load:    map[string]int{"": 2},
			asks:    []ask{{"f1", 9, 1}, {"", 9, 0}}},
		{name: "legacy any-function takes what the others leave", workers: 3,
			runners: map[string][]int{"f1": {0, 1}, "f2": {1}, "": {0, 1, 2}},
			load:    map[string]int{"f2": 1},
			asks:    []ask{{"", 9, 2}, {"f1", 9, 0}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var names []string
			var runners [][]int
			for _, f := range []string{"f1", "f2", "f3", ""} {
				if r, ok := c.runners[f]; ok {
					names = append(names, f)
					runners = append(runners, r)
				}
			}
			m := newMatching(c.workers, names, runners, c.load)
			if m.unmatched != c.unmatched {
				t.Errorf("unmatched %d, want %d", m.unmatched, c.unmatched)
			}
			for i, a := range c.asks {
				if got := m.more(a.function, a.want); got != a.got {
					t.Errorf("ask %d: more(%q, %d) = %d, want %d", i, a.function, a.want, got, a.got)
				}
			}
		})
	}
}

// The matching agrees with a plain one-node-per-invocation Kuhn on random
// small installations: more(F) is the largest k with load plus k of F all
// matched.
func TestMatchingMoreRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for round := range 2000 {
		workers := 1 + rng.Intn(6)
		nf := 1 + rng.Intn(3)
		var names []string
		var runners [][]int
		for f := range nf {
			names = append(names, fmt.Sprintf("f%d", f))
			var r []int
			for w := range workers {
				if rng.Intn(2) == 0 {
					r = append(r, w)
				}
			}
			runners = append(runners, r)
		}
		// Load that fits (a random subset of a perfect matching's units).
		load := map[string]int{}
		for range rng.Intn(workers + 1) {
			f := rng.Intn(nf)
			load[names[f]]++
			if maxMatched(workers, runners, names, load) < sum(load) {
				load[names[f]]--
			}
		}
		ask := rng.Intn(nf)
		want := 0
		for k := 1; k <= workers; k++ {
			load[names[ask]] += k
			if maxMatched(workers, runners, names, load) == sum(load) {
				want = k
			}
			load[names[ask]] -= k
			if want < k {
				break
			}
		}
		m := newMatching(workers, names, runners, load)
		if got := m.more(names[ask], workers); got != want {
			t.Fatalf("round %d: workers %d, runners %v, load %v: more(%s) = %d, want %d", round, workers, runners, load, names[ask], got, want)
		}
	}
}

func sum(load map[string]int) int {
	n := 0
	for _, l := range load {
		n += l
	}
	return n
}

// maxMatched is the size of a maximum matching of load's invocations, one
// node each, to workers (textbook Kuhn).
func maxMatched(workers int, runners [][]int, names []string, load map[string]int) int {
	var nodes [][]int
	for i, f := range names {
		for range load[f] {
			nodes = append(nodes, runners[i])
		}
	}
	owner := make([]int, workers)
	for i := range owner {
		owner[i] = -1
	}
	var try func(v int, seen []bool) bool
	try = func(v int, seen []bool) bool {
		for _, w := range nodes[v] {
			if seen[w] {
				continue
			}
			seen[w] = true
			if owner[w] < 0 || try(owner[w], seen) {
				owner[w] = v
				return true
			}
		}
		return false
	}
	n := 0
	for v := range nodes {
		if try(v, make([]bool, workers)) {
			n++
		}
	}
	return n
}
