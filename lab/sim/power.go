package sim

import (
	"time"

	"strconv"

	"github.com/microfaas/microfaas/lab/profile"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// powerMeter is the simulated meter: the profile's linear per-state model
// integrated exactly over the workers' states (what a strip meter sees:
// baseline, off workers, each on-state), sampled every interval as the
// mean power since the previous sample, as meter.csv holds it.
type powerMeter struct {
	on       bool
	model    profile.Power
	interval int64
	watts    float64 // now
	last     int64   // integrated up to
	window   int64   // the current sample window's start
	acc      float64 // joules in the current window
	total    float64 // joules since the start
	started  bool
}

func newPowerMeter(p profile.Power, workers int, interval time.Duration) powerMeter {
	return powerMeter{on: p.Has(), model: p, interval: int64(interval),
		watts: p.BaselineWatts + float64(workers)*p.OffWatts}
}

// stateWatts is one worker's power in s above off.
func (m *powerMeter) stateWatts(s state.Name) float64 {
	if !state.IsOn(s) {
		return 0
	}
	return m.model.Watts[s]
}

// change moves one worker from one state to another.
func (m *powerMeter) change(from, to state.Name) {
	m.watts += m.stateWatts(to) - m.stateWatts(from)
}

// advance integrates the power up to t (ns since start), writing a sample
// at every interval boundary passed.
func (m *powerMeter) advance(s *sim, t int64) {
	if !m.on {
		return
	}
	if !m.started {
		m.started = true
		s.sample(0, m.watts) // the first sample starts the series
	}
	for m.window+m.interval <= t {
		b := m.window + m.interval
		m.add(b)
		s.sample(b, m.acc/(float64(m.interval)/1e9))
		m.acc, m.window = 0, b
	}
	m.add(t)
}

func (m *powerMeter) add(t int64) {
	if t <= m.last {
		return
	}
	j := m.watts * float64(t-m.last) / 1e9
	m.acc += j
	m.total += j
	m.last = t
}

// flush writes the last, partial window's sample.
func (m *powerMeter) flush(s *sim) {
	if m.on && m.last > m.window {
		s.sample(m.last, m.acc/(float64(m.last-m.window)/1e9))
		m.acc, m.window = 0, m.last
	}
}

// sample writes one meter.csv row at t (ns since start).
func (s *sim) sample(t int64, watts float64) {
	if s.meter == nil {
		return
	}
	s.meter.Write([]string{strconv.FormatInt(s.start.UnixNano()+t, 10), strconv.FormatFloat(watts, 'f', -1, 64), s.meterSource()})
}

// meterSource labels the simulated meter's samples: a model, so every
// figure built on them says so.
func (s *sim) meterSource() string { return "model:sim:" + s.cfg.Profile.Name }
