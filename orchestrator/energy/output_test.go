package energy_test

import (
	"bytes"
	"encoding/csv"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/state"
)

func TestAccountantClosesSessions(t *testing.T) {
	var a energy.Accountant
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	for s := 0; s <= 20; s++ {
		a.Add(energy.Sample{At: at(s), Watts: 10, Source: "measured:wattsup"})
	}
	ch := func(w string, to state.Name, s int, inv string) {
		a.Observe(state.Change{Worker: w, To: to, At: at(s), Invocation: inv})
	}
	ch("b0", state.Booting, 1, "")
	ch("b0", state.Working, 3, "i1")
	ch("b0", state.Idle, 5, "")
	ch("b0", state.Working, 6, "i2")
	ch("b1", state.Booting, 6, "")
	ch("b1", state.Working, 8, "i3")
	if got := a.Closed(); len(got) != 0 {
		t.Errorf("closed %v before any session ended", got)
	}
	ch("b0", state.Stopping, 8, "")
	ch("b0", state.Off, 9, "")
	if got := a.Closed(); !reflect.DeepEqual(got, []string{"i1", "i2"}) {
		t.Errorf("closed %v, want [i1 i2]", got)
	}
	ch("b1", state.Stopping, 10, "")
	ch("b1", state.Off, 11, "")
	if got := a.Closed(); !reflect.DeepEqual(got, []string{"i3"}) {
		t.Errorf("closed %v, want [i3]", got)
	}
	res, err := a.Result(at(20))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(res.TotalJ-200) > 1e-9 {
		t.Errorf("total %v J, want 200 (10 W for 20 s)", res.TotalJ)
	}
	row := res.CSVFields("i3")
	if len(row) != len(energy.CSVColumns) || row[len(row)-1] != "measured:wattsup" {
		t.Errorf("csv fields %v", row)
	}
	if empty := res.CSVFields("nope"); empty[0] != "" {
		t.Errorf("unknown invocation has energy %v", empty)
	}
	var sum float64
	for _, j := range res.ByWorkerFunctionState(map[string]string{"i1": "f", "i2": "f", "i3": "g"}) {
		sum += j
	}
	if math.Abs(sum-res.TotalJ) > 1e-6 {
		t.Errorf("Prometheus sums %v J, total %v J", sum, res.TotalJ)
	}
}

func TestRunFolderCSV(t *testing.T) {
	samples := []energy.Sample{
		{At: time.Unix(0, 1500), Watts: 12.5, Source: "measured:wattsup"},
		{At: time.Unix(0, 2500), Watts: 1.75, Worker: "vm0", Source: "model:cpu-time"},
	}
	var meter, boards, tl bytes.Buffer
	energy.WriteMeterCSV(&meter, samples)
	energy.WriteBoardCSV(&boards, samples)
	energy.WriteTimelineCSV(&tl, []energy.Interval{{Worker: "vm0", State: "working", Start: time.Unix(0, 10), End: time.Unix(0, 20), Invocation: "i1"}})
	for _, tc := range []struct {
		buf  *bytes.Buffer
		want [][]string
	}{
		{&meter, [][]string{{"t_unix_ns", "watts", "source"}, {"1500", "12.5", "measured:wattsup"}}},
		{&boards, [][]string{{"t_unix_ns", "worker", "watts", "source"}, {"2500", "vm0", "1.75", "model:cpu-time"}}},
		{&tl, [][]string{{"worker", "state", "start_unix_ns", "end_unix_ns", "invocation"}, {"vm0", "working", "10", "20", "i1"}}},
	} {
		got, err := csv.NewReader(tc.buf).ReadAll()
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("csv %v %v, want %v", got, err, tc.want)
		}
	}
}

// TestAccountantTrim: what Trim drops plus what a result of the rest
// counts is the whole meter, and the rest is still attributed.
func TestAccountantTrim(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	var a energy.Accountant
	a.Model = &energy.StateModel{BaselineWatts: 10, Watts: map[state.Name]float64{state.Booting: 2, state.Idle: 1, state.Working: 3, state.Stopping: 1}}
	// Two sessions of one board: invocation a in [1,4), b in [6,9).
	for _, c := range []state.Change{
		{Worker: "w", To: state.Booting, At: at(1)}, {Worker: "w", To: state.Working, At: at(2), Invocation: "a"},
		{Worker: "w", To: state.Stopping, At: at(3)}, {Worker: "w", To: state.Off, At: at(4)},
		{Worker: "w", To: state.Booting, At: at(6)}, {Worker: "w", To: state.Working, At: at(7), Invocation: "b"},
		{Worker: "w", To: state.Stopping, At: at(8)}, {Worker: "w", To: state.Off, At: at(9)},
	} {
		a.Observe(c)
	}
	// A whole meter every second (12 W) and a per-board series that must
	// not count towards the total when a whole meter exists.
	for s := 0; s <= 10; s++ {
		a.Add(energy.Sample{At: at(float64(s)), Watts: 12, Source: "measured:test"})
		a.Add(energy.Sample{At: at(float64(s)), Watts: 1, Worker: "w", Source: "measured:test"})
	}
	full, err := a.Result(at(10))
	if err != nil {
		t.Fatal(err)
	}
	dropped := a.Trim(at(5))
	if dropped != 5*12 {
		t.Errorf("dropped %v J, want 60 (5 s at 12 W of the whole meter)", dropped)
	}
	rest, err := a.Result(at(10))
	if err != nil {
		t.Fatal(err)
	}
	if got := dropped + rest.TotalJ; got != full.TotalJ {
		t.Errorf("dropped %v + rest %v = %v, want the full %v", dropped, rest.TotalJ, got, full.TotalJ)
	}
	if rest.Invocations["a"] != nil || rest.Invocations["b"] == nil || *rest.Invocations["b"] != *full.Invocations["b"] {
		t.Errorf("after trimming: a %+v, b %+v; want a gone and b as before (%+v)", rest.Invocations["a"], rest.Invocations["b"], full.Invocations["b"])
	}
	if n := len(a.Samples()); n != 12 {
		t.Errorf("%d samples kept, want 12 (2 series × 6, each from its mark at 5 s)", n)
	}
}
