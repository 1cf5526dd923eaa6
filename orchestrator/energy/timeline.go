package energy

import (
	"sort"
	"sync"
	"time"

	"github.com/microfaas/microfaas/orchestrator/state"
)

// Interval is one span a worker spent in one state. Invocation is set for
// "working" (the invocation run); End zero means still open.
type Interval struct {
	Worker     string
	State      state.Name
	Start, End time.Time
	Invocation string
}

// Timeline turns state changes into intervals. Observe is cheap and safe to
// call from the orchestrator's loop.
type Timeline struct {
	mu     sync.Mutex
	open   map[string]Interval // current interval per worker
	closed []Interval
}

// NewTimeline starts an empty timeline; workers not yet reported are off.
func NewTimeline() *Timeline { return &Timeline{open: map[string]Interval{}} }

// Observe records a state change: it closes the worker's current interval
// and opens one in the new state.
func (t *Timeline) Observe(c state.Change) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.open[c.Worker]; ok {
		cur.End = c.At
		if cur.End.After(cur.Start) {
			t.closed = append(t.closed, cur)
		}
	}
	t.open[c.Worker] = Interval{Worker: c.Worker, State: c.To, Start: c.At, Invocation: c.Invocation}
}

// Intervals returns every interval up to until, open ones cut at until,
// sorted by worker then start.
func (t *Timeline) Intervals(until time.Time) []Interval {
	t.mu.Lock()
	out := append([]Interval(nil), t.closed...)
	for _, cur := range t.open {
		if until.After(cur.Start) {
			cur.End = until
			out = append(out, cur)
		}
	}
	t.mu.Unlock()
	sortIntervals(out)
	return out
}

func sortIntervals(iv []Interval) {
	sort.SliceStable(iv, func(i, j int) bool {
		if iv[i].Worker != iv[j].Worker {
			return iv[i].Worker < iv[j].Worker
		}
		return iv[i].Start.Before(iv[j].Start)
	})
}

// Recorder keeps the samples a meter emits; its Add is a Meter's emit func.
type Recorder struct {
	mu      sync.Mutex
	samples []Sample
	latest  time.Time
}

// Add stores a sample.
func (r *Recorder) Add(s Sample) {
	r.mu.Lock()
	r.samples = append(r.samples, s)
	if s.At.After(r.latest) {
		r.latest = s.At
	}
	r.mu.Unlock()
}

// Latest is the time of the newest sample (zero before the first).
func (r *Recorder) Latest() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.latest
}

// Samples returns a copy of the samples so far.
func (r *Recorder) Samples() []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Sample(nil), r.samples...)
}

// trim drops the closed intervals that ended at or before t.
func (t *Timeline) trim(before time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	kept := t.closed[:0]
	for _, iv := range t.closed {
		if iv.End.After(before) {
			kept = append(kept, iv)
		}
	}
	clear(t.closed[len(kept):])
	t.closed = kept
}

// trim drops every sample before the last one at or before t in its series
// (that one stays: it starts the series' next interval), and returns the
// joules of the dropped intervals: of the whole-meter series if there is
// one, else of the per-board series (what Attribute counts as the total).
// A meter emits each series in time order, so index order is time order
// within a series.
func (r *Recorder) trim(before time.Time) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	mark := map[string]int{} // per series, the last sample at or before t
	whole := false
	for i, s := range r.samples {
		if !s.At.After(before) {
			mark[s.Worker] = i
		}
		whole = whole || s.Worker == ""
	}
	var dropped float64
	prev := map[string]time.Time{}
	kept := r.samples[:0]
	for i, s := range r.samples {
		m, ok := mark[s.Worker]
		if ok && i <= m && (s.Worker == "") == whole {
			if p, seen := prev[s.Worker]; seen && s.At.After(p) {
				dropped += s.Watts * s.At.Sub(p).Seconds()
			}
		}
		prev[s.Worker] = s.At
		if !ok || i >= m {
			kept = append(kept, s)
		}
	}
	clear(r.samples[len(kept):])
	r.samples = kept
	return dropped
}
