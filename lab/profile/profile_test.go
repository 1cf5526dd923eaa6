package profile

import (
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/lab/report"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// testdata/demo-2w is a run folder recorded by `mforch demo` on the
// development host (2 local QEMU workers under TCG, 9 invocations of the
// compute functions, the cpu-time meter model), copied without its
// consoles and manifests.
const demoRun = "testdata/demo-2w"

func TestFitRecordedRun(t *testing.T) {
	run, err := report.Load(demoRun)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Fit(run, "")
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != cluster.KindVM {
		t.Errorf("kind %q, want vm (a qemu run)", p.Kind)
	}
	// Every boot of this run is a power-on followed by a job: the boot
	// samples are the booting intervals, the shutdowns the stopping ones.
	var boots, stops []float64
	for _, iv := range run.Timeline {
		switch iv.State {
		case state.Booting:
			boots = append(boots, round(iv.End.Sub(iv.Start).Seconds(), 4))
		case state.Stopping:
			stops = append(stops, round(iv.End.Sub(iv.Start).Seconds(), 4))
		}
	}
	if len(boots) != 9 || len(stops) != 9 {
		t.Fatalf("test data: %d boots, %d stops, want 9 each", len(boots), len(stops))
	}
	if !sameSet(p.Boot.Samples, boots) || !sameSet(p.Shutdown.Samples, stops) {
		t.Errorf("boot %v want %v; shutdown %v want %v", p.Boot.Samples, boots, p.Shutdown.Samples, stops)
	}
	if !reflect.DeepEqual(p.Reboot, p.Boot) {
		t.Error("a run without reboots: reboot should be the boot's distribution")
	}
	if n := len(p.Exec["default"].Samples); n != 9 {
		t.Errorf("default exec has %d samples, want the 9 invocations", n)
	}
	for _, r := range run.Rows {
		d, ok := p.ExecOf(r.Function)
		if !ok || !contains(d.Samples, round(r.ExecMS/1000, 4)) {
			t.Errorf("%s: exec %v ms not among %v", r.Function, r.ExecMS, d.Samples)
		}
	}
	for _, v := range p.Overhead.Samples {
		if v < 0 || v > 1 {
			t.Errorf("overhead %v s: want the job's time beyond its exec, well under a second here", v)
		}
	}
	// The meter is the cpu-time model with idle_watts 45 and 9.5 W per
	// busy core: the fitted baseline is near 45 W and a booting or working
	// VM draws at most one core's 9.5 W.
	pw := p.Power
	if pw.BaselineWatts < 40 || pw.BaselineWatts > 55 {
		t.Errorf("baseline %.2f W, want about 45", pw.BaselineWatts)
	}
	for _, s := range []state.Name{state.Booting, state.Working} {
		if w := pw.Watts[s]; w <= 0 || w > 12 {
			t.Errorf("%s %.2f W, want (0, 12]", s, w)
		}
	}
	// The fitted profile survives writing and reading.
	b, err := p.Marshal("test")
	if err != nil {
		t.Fatal(err)
	}
	q, err := Parse(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if !reflect.DeepEqual(p, q) {
		t.Errorf("round trip changed the profile:\n%+v\n%+v", p, q)
	}
}

func TestFitErrors(t *testing.T) {
	run, err := report.Load(demoRun)
	if err != nil {
		t.Fatal(err)
	}
	cl := *run
	cl.Summary.WorkerKind = "cluster"
	if _, err := Fit(&cl, ""); !errors.Is(err, ErrFit) {
		t.Errorf("cluster run without --kind: %v, want ErrFit", err)
	}
	if p, err := Fit(&cl, cluster.KindBBB); err != nil || p.Kind != cluster.KindBBB {
		t.Errorf("cluster run with kind bbb: %v", err)
	}
	// Without timeline.csv there are no boot times.
	dir := t.TempDir()
	for _, f := range []string{"results.csv", "summary.json"} {
		b, _ := os.ReadFile(filepath.Join(demoRun, f))
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	bare, err := report.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Fit(bare, ""); !errors.Is(err, ErrFit) {
		t.Errorf("no timeline: %v, want ErrFit", err)
	}
}

func TestParseChecks(t *testing.T) {
	good := "name: x\nkind: vm\nsource: test\nboot: {dist: const, mean: 1}\nshutdown: {dist: const, mean: 0.1}\nexec: {default: {dist: const, mean: 0.01}}\n"
	p, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p.Reboot, p.Boot) || p.Overhead.Dist != Const {
		t.Errorf("defaults: reboot %+v overhead %+v", p.Reboot, p.Overhead)
	}
	for name, bad := range map[string]string{
		"unknown key":   good + "colour: red\n",
		"bad kind":      "name: x\nkind: pi\nboot: {dist: const, mean: 1}\nshutdown: {dist: const, mean: 0.1}\nexec: {default: {dist: const, mean: 0.01}}\n",
		"no exec":       "name: x\nkind: vm\nboot: {dist: const, mean: 1}\nshutdown: {dist: const, mean: 0.1}\n",
		"bad dist":      "name: x\nkind: vm\nboot: {dist: gamma, mean: 1}\nshutdown: {dist: const, mean: 0.1}\nexec: {default: {dist: const, mean: 0.01}}\n",
		"no samples":    "name: x\nkind: vm\nboot: {dist: empirical}\nshutdown: {dist: const, mean: 0.1}\nexec: {default: {dist: const, mean: 0.01}}\n",
		"bad state":     good + "power: {watts: {dozing: 1}}\n",
		"negative watt": good + "power: {watts: {idle: -1}}\n",
	} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrProfile) {
			t.Errorf("%s: err %v, want ErrProfile", name, err)
		}
	}
}

// The BeagleBone profile of examples/ is a valid profile with every
// state's power.
func TestExampleBBBProfile(t *testing.T) {
	p, err := Load("../../examples/profiles/bbb-srm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != cluster.KindBBB || !p.Power.Has() {
		t.Fatalf("%+v", p)
	}
	for _, s := range state.On {
		if p.Power.Watts[s] <= 0 {
			t.Errorf("%s: no power", s)
		}
	}
}

func TestDraw(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	mean := func(d Dist) float64 {
		s := 0.0
		for range 20000 {
			v := d.Draw(r)
			if v < 0 {
				t.Fatalf("%+v drew %v", d, v)
			}
			s += v
		}
		return s / 20000
	}
	for _, tc := range []struct {
		d    Dist
		want float64
	}{
		{Dist{Dist: Const, Mean: 1.5}, 1.5},
		{Dist{Dist: Normal, Mean: 2, SD: 0.1}, 2},
		{Dist{Dist: LogNormal, Mean: 0.2, SD: 0.15}, 0.2},
		{Dist{Dist: Uniform, Min: 1, Max: 3}, 2},
		{Dist{Dist: Empirical, Samples: []float64{1, 2, 6}}, 3},
	} {
		if got := mean(tc.d); math.Abs(got-tc.want) > 0.03*tc.want {
			t.Errorf("%+v: mean %.4f, want %.4f ± 3%%", tc.d, got, tc.want)
		}
	}
	d := Dist{Dist: Normal, Mean: 1, SD: 1, Min: 0.5}
	for range 1000 {
		if v := d.Draw(r); v < 0.5 {
			t.Fatalf("normal with min 0.5 drew %v", v)
		}
	}
	e := Dist{Dist: Empirical, Samples: []float64{0.1, 0.7}}
	for range 100 {
		if v := e.Draw(r); v != 0.1 && v != 0.7 {
			t.Fatalf("empirical drew %v", v)
		}
	}
}

func sameSet(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for _, v := range b {
		if !contains(a, v) {
			return false
		}
	}
	return true
}

func contains(s []float64, v float64) bool {
	for _, x := range s {
		if math.Abs(x-v) < 1e-9 {
			return true
		}
	}
	return false
}
