package sim

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/lab/profile"
	"github.com/microfaas/microfaas/lab/report"
	"github.com/microfaas/microfaas/orchestrator/state"
)

func c(v float64) profile.Dist { return profile.Dist{Dist: profile.Const, Mean: v} }

// testProfile has fixed times (boot 1 s, reboot 0.8 s, shutdown 0.2 s,
// exec 0.1 s) and power, so every figure of a run can be worked out.
func testProfile(t *testing.T, kind string) *profile.Profile {
	t.Helper()
	p := &profile.Profile{Name: "const", Kind: kind, Source: "test", Boot: c(1), Reboot: c(0.8), Shutdown: c(0.2),
		Exec: map[string]profile.Dist{"default": c(0.1)}, Overhead: c(0),
		Power: profile.Power{BaselineWatts: 10, OffWatts: 0.5,
			Watts: map[state.Name]float64{state.Booting: 3, state.Idle: 1, state.Working: 4, state.Stopping: 2}}}
	if err := p.Check(); err != nil {
		t.Fatal(err)
	}
	return p
}

func testSpec(n int, process string, rate float64, callers int) *experiment.Spec {
	return &experiment.Spec{Name: "t", Functions: []string{"matmul", "float_operations"}, Invocations: n,
		Arrival: experiment.ArrivalSpec{Process: process, Rate: rate, Concurrency: callers},
		Seed:    7, Mode: experiment.PowerCycled, Timeout: experiment.Duration(2 * time.Minute)}
}

func run(t *testing.T, cfg Config) (*Result, *report.Analysis) {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "run")
	}
	cfg.File = []byte("name: t\n")
	cfg.ProfileFile = []byte("name: const\n")
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := report.Load(cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	return res, report.Analyze(r)
}

// With fixed times every number is known: one worker, a call every 10 s,
// each a boot (1 s) and a job (0.1 s) away; the meter integrates the
// baseline, the off worker and each state's power.
func TestSimExactTimes(t *testing.T) {
	// A meter sample every 100 ms falls on every change of state.
	res, a := run(t, Config{Spec: testSpec(3, experiment.Uniform, 0.1, 0), Profile: testProfile(t, cluster.KindVM), Workers: 1,
		MeterInterval: 100 * time.Millisecond})
	if a.OK != 3 || a.Failed != 0 {
		t.Fatalf("%d ok, %d failed", a.OK, a.Failed)
	}
	for i, r := range a.Run.Rows {
		if r.LatencyMS != 1100 || r.ExecMS != 100 {
			t.Errorf("row %d: latency %v ms exec %v ms, want 1100 and 100", i, r.LatencyMS, r.ExecMS)
		}
		if want := a.Start.Add(time.Duration(i) * 10 * time.Second); !r.Queued.Equal(want) {
			t.Errorf("row %d queued at %v, want %v", i, r.Queued, want)
		}
	}
	want := map[state.Name]time.Duration{state.Booting: 3 * time.Second, state.Working: 300 * time.Millisecond, state.Stopping: 600 * time.Millisecond}
	got := map[state.Name]time.Duration{}
	for _, iv := range a.Run.Timeline {
		got[iv.State] += iv.End.Sub(iv.Start)
	}
	for s, d := range want {
		if got[s] != d {
			t.Errorf("%s for %v, want %v", s, got[s], d)
		}
	}
	// The run is 21.1 s (the last call finished at 20 s + 1.1 s): 10.5 W
	// throughout, plus 3 W × 1 s + 4 W × 0.1 s + 2 W × 0.2 s a call, but
	// the last stop (0.4 J) comes after the run's end.
	if j := 10.5*21.1 + 3*3.8 - 0.4; math.Abs(a.MeterJ-j) > 1e-9*j {
		t.Errorf("meter %.6f J over the run, want %.6f", a.MeterJ, j)
	}
	if math.Abs(res.EnergyJ-(10.5*21.3+3*3.8)) > 1e-9*res.EnergyJ {
		t.Errorf("simulated energy %.6f J, want %.6f (to the last worker off)", res.EnergyJ, 10.5*21.3+3*3.8)
	}
	if s := a.Run.Summary; s.Simulated == nil || s.WorkerKind != "sim" || s.Simulated.Events == 0 || !a.MeterModel {
		t.Errorf("not marked simulated: %+v (meter model %v)", s, a.MeterModel)
	}
	var text, page bytes.Buffer
	if err := report.WriteText(&text, []*report.Analysis{a}); err != nil {
		t.Fatal(err)
	}
	if err := report.WriteHTML(&page, []*report.Analysis{a}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "SIMULATED: profile const") || !strings.Contains(page.String(), "SIMULATED") {
		t.Errorf("the report does not say the run is simulated:\n%s", text.String())
	}
}

// Under a queue, with random times: every arrival ends in one row, every
// job in one working interval of the timeline, timestamps are in order,
// and the meter's energy is the per-state power times the timeline's time.
func TestSimConservation(t *testing.T) {
	p := testProfile(t, cluster.KindVM)
	p.Boot = profile.Dist{Dist: profile.Normal, Mean: 1.2, SD: 0.3, Min: 0.5}
	p.Shutdown = profile.Dist{Dist: profile.Uniform, Min: 0.05, Max: 0.3}
	p.Exec = map[string]profile.Dist{"matmul": {Dist: profile.LogNormal, Mean: 0.2, SD: 0.2}, "default": {Dist: profile.Empirical, Samples: []float64{0.01, 0.05, 0.3}}}
	p.Overhead = profile.Dist{Dist: profile.Uniform, Min: 0.001, Max: 0.02}
	const n, workers = 300, 4
	res, a := run(t, Config{Spec: testSpec(n, experiment.Poisson, 4, 0), Profile: p, Workers: workers})
	if res.Summary.Done != n || a.Total != n || a.OK != n {
		t.Fatalf("done %d, rows %d, ok %d; want %d", res.Summary.Done, a.Total, a.OK, n)
	}
	ids := map[string]bool{}
	for _, r := range a.Run.Rows {
		if ids[r.Invocation] {
			t.Fatalf("invocation %s recorded twice", r.Invocation)
		}
		ids[r.Invocation] = true
		if r.Started.Before(r.Queued) || r.Finished.Before(r.Started) || r.Connected.Before(r.PoweredOn) || r.Started.Before(r.Connected) {
			t.Fatalf("timeline out of order: %+v", r)
		}
	}
	var waited int
	for _, s := range a.Functions {
		if s.Wait > 0 {
			waited++
		}
	}
	if waited == 0 {
		t.Error("no invocation waited: the load does not queue, the test checks less than it says")
	}
	perState := map[state.Name]float64{}
	working := 0
	for _, iv := range a.Run.Timeline {
		perState[iv.State] += iv.End.Sub(iv.Start).Seconds()
		if iv.State == state.Working {
			working++
			if !ids[iv.Invocation] {
				t.Errorf("working interval for %q, which has no row", iv.Invocation)
			}
		}
	}
	if working != n {
		t.Errorf("%d working intervals, want %d", working, n)
	}
	m := a.Run.Meter
	span := m[len(m)-1].At.Sub(m[0].At).Seconds()
	want := (p.Power.BaselineWatts + workers*p.Power.OffWatts) * span
	for s, sec := range perState {
		want += p.Power.Watts[s] * sec
	}
	got, _ := report.Energy(m, m[0].At, m[len(m)-1].At)
	if math.Abs(got-want) > 1e-9*want || math.Abs(res.EnergyJ-want) > 1e-9*want {
		t.Errorf("meter %.6f J, simulator %.6f J; per-state power × time %.6f J", got, res.EnergyJ, want)
	}
}

// One seed, one run: the folders are byte for byte the same; another seed
// draws other times.
func TestSimDeterministic(t *testing.T) {
	p := testProfile(t, cluster.KindBBB)
	p.Boot = profile.Dist{Dist: profile.Normal, Mean: 4, SD: 0.5}
	p.Exec = map[string]profile.Dist{"default": {Dist: profile.LogNormal, Mean: 0.2, SD: 0.1}}
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	for i, d := range dirs {
		spec := testSpec(100, experiment.Poisson, 1, 0)
		if i == 2 {
			spec.Seed = 8
		}
		run(t, Config{Spec: spec, Profile: p, Workers: 5, Dir: filepath.Join(d, "run"),
			Policy: cluster.Policy{Name: cluster.PolicyRebootWhileQueued}})
	}
	for _, f := range []string{report.ResultsFile, report.TimelineFile, report.MeterFile} {
		a, _ := os.ReadFile(filepath.Join(dirs[0], "run", f))
		b, _ := os.ReadFile(filepath.Join(dirs[1], "run", f))
		c, _ := os.ReadFile(filepath.Join(dirs[2], "run", f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s differs between two runs with one seed", f)
		}
		if bytes.Equal(a, c) {
			t.Errorf("%s is the same with another seed", f)
		}
	}
}

// The policies move the numbers the way they should on boards (10 s
// power-off holdoff): with work always queued, reboot-while-queued skips
// the holdoff and the power-on, so it serves far more; with sparse calls a
// warm pool answers without a boot, for more energy per call.
func TestSimPolicyEffects(t *testing.T) {
	p := testProfile(t, cluster.KindBBB)
	p.Boot, p.Reboot = c(4), c(3.5)
	queued := func(pol cluster.Policy) *report.Analysis {
		_, a := run(t, Config{Spec: testSpec(80, experiment.ClosedLoop, 0, 8), Profile: p, Workers: 4, Policy: pol})
		return a
	}
	off, reboot := queued(cluster.Policy{}), queued(cluster.Policy{Name: cluster.PolicyRebootWhileQueued})
	t.Logf("work queued: off %.1f/min p50 %.0f ms; reboot-while-queued %.1f/min p50 %.0f ms", off.PerMinute, off.All.P50, reboot.PerMinute, reboot.All.P50)
	// off: boot 4 + job 0.1 + holdoff 10 a call per board; reboot: 3.5 + 0.1.
	if reboot.PerMinute < 2.5*off.PerMinute {
		t.Errorf("work queued: reboot-while-queued %.1f/min, off %.1f/min; want reboot > 2.5× off", reboot.PerMinute, off.PerMinute)
	}
	if math.Abs(off.PerMinute-4*60/14.1) > 0.1*4*60/14.1 {
		t.Errorf("off: %.1f/min, want about 4 boards / 14.1 s = %.1f/min", off.PerMinute, 4*60/14.1)
	}
	sparse := func(pol cluster.Policy) *report.Analysis {
		_, a := run(t, Config{Spec: testSpec(10, experiment.Uniform, 1.0/30, 0), Profile: p, Workers: 4, Policy: pol})
		return a
	}
	cold, warm := sparse(cluster.Policy{}), sparse(cluster.Policy{Name: cluster.PolicyWarmPool, Pool: 2})
	t.Logf("sparse: off p50 %.0f ms %.2f J/call; warm-pool=2 p50 %.0f ms %.2f J/call", cold.All.P50, cold.JPerInv, warm.All.P50, warm.JPerInv)
	if cold.All.P50 < 4000 || warm.All.P50 > 200 {
		t.Errorf("sparse calls: p50 off %.0f ms (want a boot, >= 4000), warm-pool %.0f ms (want no boot, <= 200)", cold.All.P50, warm.All.P50)
	}
	if warm.JPerInv <= cold.JPerInv {
		t.Errorf("warm pool %.2f J per call, off %.2f: idle boards should cost energy", warm.JPerInv, cold.JPerInv)
	}
	// A board is off on the meter once its shutdown (0.2 s) is over, though
	// the machine counts it stopping for the 10 s holdoff.
	var stopping float64
	for _, iv := range cold.Run.Timeline {
		if iv.State == state.Stopping {
			stopping += iv.End.Sub(iv.Start).Seconds()
		}
	}
	if stopping < 10*9 {
		t.Fatalf("stopping %.1f s in all, want the holdoff's 10 s per call", stopping)
	}
}

func TestSimTraceReplay(t *testing.T) {
	trace := "timestamp,function\n# a comment\n2026-03-01T10:00:05Z,matmul\n2026-03-01T10:00:00Z,float_operations\n2026-03-01T10:00:00.5Z,matmul\n"
	calls, err := ReadTrace(strings.NewReader(trace))
	if err != nil {
		t.Fatal(err)
	}
	want := []TraceCall{{0, "float_operations"}, {500 * time.Millisecond, "matmul"}, {5 * time.Second, "matmul"}}
	if len(calls) != 3 {
		t.Fatalf("%+v", calls)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Errorf("call %d: %+v, want %+v", i, calls[i], want[i])
		}
	}
	secs, err := ReadTrace(strings.NewReader("function,t\nmatmul,100.25\nmatmul,100\n"))
	if err != nil || secs[1].At != 250*time.Millisecond {
		t.Errorf("seconds: %+v %v", secs, err)
	}
	for _, bad := range []string{"", "when,what\n1,f\n", "timestamp,function\nyesterday,f\n", "timestamp,function\n1,\n", "timestamp,function\n"} {
		if _, err := ReadTrace(strings.NewReader(bad)); !errors.Is(err, ErrTrace) {
			t.Errorf("%q: %v, want ErrTrace", bad, err)
		}
	}
	res, a := run(t, Config{Spec: testSpec(1, experiment.Poisson, 1, 0), Profile: testProfile(t, cluster.KindVM), Workers: 2,
		Trace: calls, TraceName: "t.csv"})
	if a.Total != 3 || res.Summary.Arrival != "trace" || res.Summary.Simulated.Trace != "t.csv" {
		t.Fatalf("rows %d, summary %+v", a.Total, res.Summary)
	}
	var text bytes.Buffer
	report.WriteText(&text, []*report.Analysis{a})
	if !strings.Contains(text.String(), "trace t.csv (3 calls)") {
		t.Errorf("the report does not name the trace:\n%s", text.String())
	}
	for _, r := range a.Run.Rows {
		found := false
		for _, c := range calls {
			if r.Queued.Sub(a.Start) == c.At && r.Function == c.Function {
				found = true
			}
		}
		if !found {
			t.Errorf("row %s %s queued at +%v: not a trace call", r.Invocation, r.Function, r.Queued.Sub(a.Start))
		}
	}
}

func TestSimConfigErrors(t *testing.T) {
	p := testProfile(t, cluster.KindVM)
	p.Exec = map[string]profile.Dist{"matmul": c(0.1)}
	if _, err := Run(Config{Spec: testSpec(2, experiment.Poisson, 1, 0), Profile: p, Workers: 1}); !errors.Is(err, ErrConfig) {
		t.Errorf("function without exec time: %v, want ErrConfig", err)
	}
	if _, err := Run(Config{Spec: testSpec(2, experiment.Poisson, 1, 0), Profile: testProfile(t, cluster.KindVM)}); !errors.Is(err, ErrConfig) {
		t.Errorf("no workers: %v, want ErrConfig", err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x"), nil, 0o644)
	if _, err := Run(Config{Spec: testSpec(2, experiment.Poisson, 1, 0), Profile: testProfile(t, cluster.KindVM), Workers: 1, Dir: dir}); err == nil {
		t.Error("a non-empty run folder was written into")
	}
}

// The bursty trace has the day's mean rate, its bursts and its daily
// shape, and survives writing and reading as a trace CSV.
func TestBurstyTrace(t *testing.T) {
	b := Bursty{Mean: 2, Functions: []string{"matmul", "float_operations"}, Seed: 3}
	calls, err := b.Trace()
	if err != nil {
		t.Fatal(err)
	}
	// Mean 2/s over a day, plus bursts: 72 bursts of 60 s at 4 extra times
	// the rate add about 72 × 60 × 2 × 4 = 34,560 calls.
	n := float64(len(calls))
	if want := 2*86400 + 34560.0; math.Abs(n-want) > 0.05*want {
		t.Errorf("%d calls, want about %.0f", len(calls), want)
	}
	perHour := make([]int, 24)
	for i, c := range calls {
		if i > 0 && c.At < calls[i-1].At {
			t.Fatal("calls out of order")
		}
		perHour[int(c.At.Hours())%24]++
	}
	if perHour[16] < 2*perHour[4] {
		t.Errorf("16:00 has %d calls, 04:00 %d: want the daily swing (4×)", perHour[16], perHour[4])
	}
	var buf bytes.Buffer
	if err := WriteTrace(&buf, calls[:1000]); err != nil {
		t.Fatal(err)
	}
	back, err := ReadTrace(&buf)
	if err != nil || len(back) != 1000 || back[999].Function != calls[999].Function || (back[999].At-calls[999].At).Abs() > time.Microsecond {
		t.Errorf("round trip: %v, %d calls", err, len(back))
	}
	if _, err := (Bursty{Mean: 1}).Trace(); !errors.Is(err, ErrConfig) {
		t.Errorf("no functions: %v", err)
	}
}
