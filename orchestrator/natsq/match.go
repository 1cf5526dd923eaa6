package natsq

// Capacity per function, exact when workers' sets of functions overlap in
// part. The invocations an instance holds or has asked for (its load) are
// matched to distinct workers able to run them (a bipartite matching,
// Kuhn's augmenting paths); function F may take as many more as there are
// augmenting paths from F. Counting F's runners minus the load of every
// function sharing one is wrong both ways: with w1, w2 running f1 and w2,
// w3 running f2 and one f1 held, f2 can take 2 (f1 on w1), not 1.
//
// A function's units are interchangeable, so the left side has one node
// per function with its load as multiplicity: a search from F costs
// O(edges) (every worker and every function is visited once), and the
// instance's workers are tens to hundreds.

// matching is the load matched to workers.
type matching struct {
	index   map[string]int // function's index in runners
	runners [][]int        // per function, its workers (not failed)
	owner   []int          // per worker, the function matched to it, -1 none
	// spare is the workers able to run anything here (in some runner set)
	// minus the whole load, unmatched included.
	spare     int
	unmatched int // load no worker is left for (a worker failed)
	seenW     []int
	seenF     []int
	stamp     int
}

// newMatching matches load (per function, the invocations held or asked
// for) to workers 0..workers-1: runners[i] are the workers able to run
// functions[i]. A function missing from functions has no runners.
func newMatching(workers int, functions []string, runners [][]int, load map[string]int) *matching {
	m := &matching{index: make(map[string]int, len(functions)), runners: runners,
		owner: make([]int, workers), seenW: make([]int, workers), seenF: make([]int, len(functions))}
	for i := range m.owner {
		m.owner[i] = -1
	}
	any := make([]bool, workers)
	for i, f := range functions {
		if _, dup := m.index[f]; dup {
			continue
		}
		m.index[f] = i
		for _, w := range runners[i] {
			if !any[w] {
				any[w] = true
				m.spare++
			}
		}
	}
	// Functions in a fixed order, so equal inputs match alike.
	for i, f := range functions {
		if m.index[f] != i {
			continue // listed twice: its load is matched once
		}
		for range load[f] {
			if !m.augment(i) {
				m.unmatched++
			}
		}
		m.spare -= load[f]
	}
	for f, l := range load {
		if _, ok := m.index[f]; !ok {
			m.unmatched += l
			m.spare -= l
		}
	}
	return m
}

// more matches up to want more invocations of function and returns how
// many it could: no more than augmenting paths from function allow, nor
// than spare (when part of the load is unmatched, a worker failed: which
// of its load finds a worker is not known, so no more than the workers
// left after the whole load are taken).
func (m *matching) more(function string, want int) int {
	i, ok := m.index[function]
	if !ok {
		return 0
	}
	n := 0
	for n < want && m.spare > 0 && m.augment(i) {
		n++
		m.spare--
	}
	return n
}

// augment matches one more unit of function f along an augmenting path.
func (m *matching) augment(f int) bool {
	m.stamp++
	return m.try(f)
}

func (m *matching) try(f int) bool {
	if m.seenF[f] == m.stamp {
		return false // no path from f in this search: none now either
	}
	m.seenF[f] = m.stamp
	for _, w := range m.runners[f] {
		if m.seenW[w] == m.stamp {
			continue
		}
		m.seenW[w] = m.stamp
		if m.owner[w] < 0 {
			m.owner[w] = f
			return true
		}
	}
	// No free runner of f: move a function off one of them.
	for _, w := range m.runners[f] {
		if g := m.owner[w]; g != f && m.try(g) {
			m.owner[w] = f
			return true
		}
	}
	return false
}
