package energy_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/state"
)

var t0 = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)

func within(t *testing.T, name string, got, want, rel float64) {
	t.Helper()
	if math.Abs(got-want) > rel*math.Abs(want) {
		t.Errorf("%s = %.4f, want %.4f within %.1f%%", name, got, want, rel*100)
	}
}

func TestFitRecoversPerStatePower(t *testing.T) {
	for _, tc := range []struct {
		name    string
		workers int
		d       time.Duration
		seed    int64
	}{
		{"4 boards 2h", 4, 2 * time.Hour, 1},
		{"10 boards 1h", 10, time.Hour, 2},
		{"3 boards 3h", 3, 3 * time.Hour, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ivs := synthTimeline(tc.seed, tc.workers, t0, tc.d, 1)
			samples := bbb.stripSamples(ivs, t0, tc.d, time.Second)
			res, err := energy.Attribute(energy.Input{Samples: samples, Intervals: ivs})
			if err != nil {
				t.Fatal(err)
			}
			f := res.Fit
			if f == nil {
				t.Fatal("no fit for a strip meter")
			}
			within(t, "baseline", f.Model.BaselineWatts, bbb.base, 0.02)
			for _, s := range state.On {
				within(t, string(s), f.Model.Watts[s], bbb.watts[s], 0.02)
			}
			t.Logf("baseline %.3f W, %v, residual RMS %.4f W, R2 %.5f over %d samples", f.Model.BaselineWatts, f.Model.Watts, f.ResidualRMS, f.R2, f.Samples)
			if f.R2 < 0.95 || f.ResidualRMS > 0.1 {
				t.Errorf("fit R2 %.4f RMS %.3f W: 0.1 W quantisation should fit better", f.R2, f.ResidualRMS)
			}
		})
	}
}

func TestAttributionAddsUpAndMatchesTruth(t *testing.T) {
	d := time.Hour
	ivs := synthTimeline(7, 5, t0, d, 1)
	samples := bbb.stripSamples(ivs, t0, d, time.Second)
	res, err := energy.Attribute(energy.Input{Samples: samples, Intervals: ivs})
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, e := range res.Invocations {
		sum += e.TotalJ()
	}
	if got := sum + res.Unattributed.TotalJ(); math.Abs(got-res.TotalJ) > 1e-6*res.TotalJ {
		t.Errorf("invocations %.1f J + unattributed %.1f J = %.1f J, meter total %.1f J", sum, res.Unattributed.TotalJ(), got, res.TotalJ)
	}
	within(t, "meter total", res.TotalJ, bbb.energyOver(ivs, t0, t0.Add(d)), 0.001)
	tr := bbb.invocationTruth(ivs)
	if len(tr) != len(res.Invocations) {
		t.Fatalf("%d invocations attributed, %d in the timeline", len(res.Invocations), len(tr))
	}
	for id, want := range tr {
		within(t, id, res.Invocations[id].TotalJ(), want, 0.03)
	}
	within(t, "baseline", res.Unattributed.BaselineJ, bbb.base*d.Seconds(), 0.02)
	for _, s := range state.On {
		var got, want float64
		for w := range res.Workers {
			got += res.Workers[w][s]
		}
		for _, iv := range ivs {
			if iv.State == s {
				want += bbb.watts[s] * iv.End.Sub(iv.Start).Seconds()
			}
		}
		within(t, "all boards "+string(s), got, want, 0.02)
	}
}

func TestPerBoardMetersAreUsedDirectly(t *testing.T) {
	// Per-board meters sampled every 20 ms (an INA226 can do more): the
	// only error is a state change inside a sample's interval.
	d := 5 * time.Minute
	step := 20 * time.Millisecond
	ivs := synthTimeline(11, 3, t0, d, 1)
	var samples []energy.Sample
	for t := t0; !t.After(t0.Add(d)); t = t.Add(step) {
		host := 20.0
		for _, w := range []string{"w0", "w1", "w2"} {
			var one []energy.Interval
			for _, iv := range ivs {
				if iv.Worker == w {
					one = append(one, iv)
				}
			}
			p := 0.0
			if t.After(t0) {
				p = bbb.energyOver(one, t.Add(-step), t)/step.Seconds() - bbb.base // one board, no baseline
			}
			host += p
			samples = append(samples, energy.Sample{At: t, Watts: p, Worker: w, Source: "model:cpu-time"})
		}
		samples = append(samples, energy.Sample{At: t, Watts: host, Source: "model:cpu-time"})
	}
	res, err := energy.Attribute(energy.Input{Samples: samples, Intervals: ivs})
	if err != nil {
		t.Fatal(err)
	}
	if res.Fit != nil {
		t.Error("fitted although every board has its own meter")
	}
	if !energy.IsModel(res.Source) || energy.Label(res.Source) != "model" {
		t.Errorf("source %q not labelled model", res.Source)
	}
	for id, want := range bbb.invocationTruth(ivs) {
		within(t, id, res.Invocations[id].TotalJ(), want, 0.01)
	}
	within(t, "baseline", res.Unattributed.BaselineJ, 20*d.Seconds(), 0.001)
	var sum float64
	for _, e := range res.Invocations {
		sum += e.TotalJ()
	}
	within(t, "sum", sum+res.Unattributed.TotalJ(), res.TotalJ, 1e-9)
}

func TestCalibratedModelIsUsedAndScored(t *testing.T) {
	d := 20 * time.Minute
	ivs := synthTimeline(5, 3, t0, d, 1)
	samples := bbb.stripSamples(ivs, t0, d, time.Second)
	model := &energy.StateModel{Source: "calibration", BaselineWatts: bbb.base, Watts: map[state.Name]float64{
		state.Booting: 2.3, state.Idle: 1.5, state.Working: 2.9 * 1.1, state.Stopping: 1.8}}
	res, err := energy.Attribute(energy.Input{Samples: samples, Intervals: ivs, Model: model})
	if err != nil {
		t.Fatal(err)
	}
	if res.Fit.Model.Source != "calibration" {
		t.Errorf("model %q used, want the calibration", res.Fit.Model.Source)
	}
	// Working is 10% high in the model: the residual must show it, negative.
	if res.Unattributed.ResidualJ >= 0 || res.Fit.ResidualRMS < 0.1 {
		t.Errorf("a 10%% wrong model left residual %.1f J, RMS %.3f W", res.Unattributed.ResidualJ, res.Fit.ResidualRMS)
	}
}

func TestUnidentifiable(t *testing.T) {
	// Two boards: b boots exactly while a works, always. Booting and working
	// counts are then the same column.
	var ivs []energy.Interval
	var samples []energy.Sample
	for i := 0; i < 50; i++ {
		s := t0.Add(time.Duration(i) * 4 * time.Second)
		ivs = append(ivs,
			energy.Interval{Worker: "a", State: state.Working, Start: s, End: s.Add(2 * time.Second), Invocation: "x"},
			energy.Interval{Worker: "b", State: state.Booting, Start: s, End: s.Add(2 * time.Second)})
	}
	for i := 0; i <= 200; i++ {
		w := 10.0
		if i%4 == 1 || i%4 == 2 {
			w = 15
		}
		samples = append(samples, energy.Sample{At: t0.Add(time.Duration(i) * time.Second), Watts: w})
	}
	_, err := energy.Attribute(energy.Input{Samples: samples, Intervals: ivs})
	if !errors.Is(err, energy.ErrUnidentifiable) {
		t.Errorf("err = %v, want ErrUnidentifiable", err)
	}
	if _, err := energy.Attribute(energy.Input{Samples: samples[:1], Intervals: ivs}); !errors.Is(err, energy.ErrNoSamples) {
		t.Errorf("one sample: err = %v, want ErrNoSamples", err)
	}
}

func TestTimelineFromStateChanges(t *testing.T) {
	tl := energy.NewTimeline()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tl.Observe(state.Change{Worker: "vm0", From: state.Off, To: state.Booting, At: at(0)})
	tl.Observe(state.Change{Worker: "vm0", From: state.Booting, To: state.Idle, At: at(2)})
	tl.Observe(state.Change{Worker: "vm0", From: state.Idle, To: state.Working, At: at(2), Invocation: "i1"})
	tl.Observe(state.Change{Worker: "vm0", From: state.Working, To: state.Stopping, At: at(5)})
	tl.Observe(state.Change{Worker: "vm0", From: state.Stopping, To: state.Off, At: at(6)})
	got := tl.Intervals(at(10))
	want := []energy.Interval{
		{Worker: "vm0", State: "booting", Start: at(0), End: at(2)},
		{Worker: "vm0", State: "working", Start: at(2), End: at(5), Invocation: "i1"},
		{Worker: "vm0", State: "stopping", Start: at(5), End: at(6)},
		{Worker: "vm0", State: "off", Start: at(6), End: at(10)},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d intervals %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("interval %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
