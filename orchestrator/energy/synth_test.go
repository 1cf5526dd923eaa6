package energy_test

import (
	"fmt"
	"math"
	"math/rand"
	"sort"
	"time"

	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// truth is a synthetic cluster: a baseline and per-state board power.
type truth struct {
	base  float64
	watts map[state.Name]float64
}

var bbb = truth{base: 11.5, watts: map[state.Name]float64{
	state.Off: 0, state.Booting: 2.3, state.Idle: 1.5, state.Working: 2.9, state.Stopping: 1.8,
}}

// synthTimeline makes n workers power-cycle for d from t0: off, boot,
// one or (kept alive) two invocations, shutdown, off again.
func synthTimeline(seed int64, n int, t0 time.Time, d time.Duration, scale float64) []energy.Interval {
	r := rand.New(rand.NewSource(seed))
	dur := func(lo, hi float64) time.Duration {
		return time.Duration((lo + r.Float64()*(hi-lo)) * scale * float64(time.Second))
	}
	var out []energy.Interval
	inv := 0
	for w := 0; w < n; w++ {
		id := fmt.Sprintf("w%d", w)
		t := t0
		add := func(s state.Name, l time.Duration, invocation string) {
			end := t.Add(l)
			if end.After(t0.Add(d)) {
				end = t0.Add(d)
			}
			if end.After(t) {
				out = append(out, energy.Interval{Worker: id, State: s, Start: t, End: end, Invocation: invocation})
			}
			t = end
		}
		for t.Before(t0.Add(d)) {
			add(state.Off, dur(0.2, 6), "")
			add(state.Booting, dur(1.5, 4), "")
			jobs := 1 + r.Intn(2)
			for j := 0; j < jobs; j++ {
				if j > 0 || r.Intn(3) == 0 {
					add(state.Idle, dur(0.3, 3), "")
				}
				inv++
				add(state.Working, dur(0.3, 5), fmt.Sprintf("inv%d", inv))
			}
			add(state.Stopping, dur(0.4, 1.5), "")
		}
	}
	return out
}

// power is the true cluster power at t.
func (tr truth) power(ivs []energy.Interval, t time.Time) float64 {
	p := tr.base
	for _, iv := range ivs {
		if !t.Before(iv.Start) && t.Before(iv.End) {
			p += tr.watts[iv.State]
		}
	}
	return p
}

// energyOver is the true joules over [a,b).
func (tr truth) energyOver(ivs []energy.Interval, a, b time.Time) float64 {
	j := tr.base * b.Sub(a).Seconds()
	for _, iv := range ivs {
		s, e := iv.Start, iv.End
		if s.Before(a) {
			s = a
		}
		if e.After(b) {
			e = b
		}
		if e.After(s) {
			j += tr.watts[iv.State] * e.Sub(s).Seconds()
		}
	}
	return j
}

// cumulative is the true joules from t0 to each of the sorted times, by a
// sweep over the intervals' start and end events.
func (tr truth) cumulative(ivs []energy.Interval, t0 time.Time, times []time.Time) []float64 {
	type ev struct {
		at time.Time
		dw float64
	}
	var evs []ev
	for _, iv := range ivs {
		evs = append(evs, ev{iv.Start, tr.watts[iv.State]}, ev{iv.End, -tr.watts[iv.State]})
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
	out := make([]float64, len(times))
	p, j, at, e := tr.base, 0, t0, 0.0
	for k, t := range times {
		for j < len(evs) && !evs[j].at.After(t) {
			if evs[j].at.After(at) {
				e += p * evs[j].at.Sub(at).Seconds()
				at = evs[j].at
			}
			p += evs[j].dw
			j++
		}
		e += p * t.Sub(at).Seconds()
		at = t
		out[k] = e
	}
	return out
}

// stripSamples are what a WattsUp on the strip reports every step: the
// average power over the step, in its 0.1 W resolution.
func (tr truth) stripSamples(ivs []energy.Interval, t0 time.Time, d, step time.Duration) []energy.Sample {
	var times []time.Time
	for t := t0; !t.After(t0.Add(d)); t = t.Add(step) {
		times = append(times, t)
	}
	e := tr.cumulative(ivs, t0, times)
	out := []energy.Sample{{At: t0, Watts: tr.power(ivs, t0), Source: "measured:wattsup"}}
	for i := 1; i < len(times); i++ {
		avg := (e[i] - e[i-1]) / step.Seconds()
		out = append(out, energy.Sample{At: times[i], Watts: math.Round(avg*10) / 10, Source: "measured:wattsup"})
	}
	return out
}

// invocationTruth is each invocation's true joules under the attribution
// rule: its exec, plus an equal share of its session's boot, idle and
// shutdown.
func (tr truth) invocationTruth(ivs []energy.Interval) map[string]float64 {
	out := map[string]float64{}
	var sess []energy.Interval
	flush := func() {
		var over float64
		var invs []string
		seen := map[string]bool{}
		for _, iv := range sess {
			j := tr.watts[iv.State] * iv.End.Sub(iv.Start).Seconds()
			if iv.Invocation != "" {
				out[iv.Invocation] += j
				if !seen[iv.Invocation] {
					seen[iv.Invocation] = true
					invs = append(invs, iv.Invocation)
				}
			} else {
				over += j
			}
		}
		for _, id := range invs {
			out[id] += over / float64(len(invs))
		}
		sess = nil
	}
	for i, iv := range ivs {
		if i > 0 && ivs[i-1].Worker != iv.Worker {
			flush()
		}
		switch iv.State {
		case state.Off:
			flush()
		case state.Booting:
			flush()
			sess = append(sess, iv)
		default:
			sess = append(sess, iv)
		}
	}
	flush()
	return out
}
