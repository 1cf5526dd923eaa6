package tco

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
	"github.com/microfaas/microfaas/lab/sim"
	"github.com/microfaas/microfaas/orchestrator/state"
)

func num(v float64, src string) *Number { return &Number{Value: v, Source: src} }

// base is two model platforms under a stated workload; tests edit it.
func base() *File {
	return &File{Name: "t", Currency: "USD",
		ElectricityPrice: num(0.10, "tariff page"), PUE: num(1.5, "assumption: a small machine room"),
		LifetimeYears: num(3, "assumption"),
		Workload:      &Workload{MeanRate: num(2, "assumption"), PeakRate: num(10, "assumption")},
		Platforms: []Platform{
			{Name: "boards", UnitPrice: num(50, "board price page"),
				Model:  &Model{ThroughputPerUnit: num(0.25, "sim"), IdleWatts: num(1, "SRM"), BusyWatts: num(2, "SRM")},
				Switch: &Switch{Price: num(100, "switch page"), Ports: num(24, "switch page"), Watts: num(10, "switch datasheet")}},
			{Name: "vm host", UnitPrice: num(5000, "server quote"),
				Model: &Model{ThroughputPerUnit: num(8, "assumption"), IdleWatts: num(100, "SPECpower"), BusyWatts: num(300, "SPECpower")}},
		}}
}

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %.12g, want %.12g", what, got, want)
	}
}

// The arithmetic, worked out by hand in the comments.
func TestCompute(t *testing.T) {
	type want struct {
		units, switches            [2]int
		watts, invPerJ, capex, tco [2]float64
		ratio, change              float64
	}
	cases := []struct {
		name string
		edit func(*File) [2]*RunStats
		want want
	}{{
		// Boards: ⌈10/0.25⌉ = 40 units, utilisation 2/(40·0.25) = 0.2,
		// 40·(1 + 1·0.2) = 48 W + ⌈40/24⌉ = 2 switches · 10 W = 68 W;
		// 2/68 inv/J; capex 40·50 + 2·100 = 2200; opex 68 W · 8766 h /
		// 1000 · 3 y · 0.10 · 1.5 = 268.2396. VM host: ⌈10/8⌉ = 2 units,
		// utilisation 2/16 = 0.125, 2·(100 + 200·0.125) = 250 W; 2/250
		// inv/J; capex 10000; opex 250 · 8.766 · 3 · 0.15 = 986.175.
		name: "two models",
		edit: func(f *File) [2]*RunStats { return [2]*RunStats{} },
		want: want{units: [2]int{40, 2}, switches: [2]int{2, 0}, watts: [2]float64{68, 250},
			invPerJ: [2]float64{2.0 / 68, 2.0 / 250}, capex: [2]float64{2200, 10000},
			tco: [2]float64{2468.2396, 10986.175}, ratio: 250.0 / 68, change: 2468.2396/10986.175 - 1},
	}, {
		// Boards from a run: 3600 calls in 3600 s, 7200 J (2 W), 10
		// workers, peak 3/s. Switches of 8 ports, 5 W: ⌈10/8⌉ = 2, 10 W: 12 W;
		// 3600 / (7200 + 10·3600) = 1/12 inv/J; capex 500 + 200 = 700;
		// opex 12 · 8.766 · 3 · 0.15 = 47.3364. The load is the run's:
		// mean 1/s, peak 3/s, so the VM host has ⌈3/8⌉ = 1 unit at
		// utilisation 1/8: 100 + 200/8 = 125 W, 1/125 inv/J; capex 5000,
		// opex 125 · 8.766 · 0.45 = 493.0875.
		name: "boards from a run",
		edit: func(f *File) [2]*RunStats {
			f.Workload = nil
			f.Platforms[0].Model = nil
			f.Platforms[0].Run = "runs/boards"
			f.Platforms[0].Switch.Ports = num(8, "switch page")
			f.Platforms[0].Switch.Watts = num(5, "switch datasheet")
			return [2]*RunStats{{Dir: "runs/boards", Invocations: 3600, Seconds: 3600, EnergyJ: 7200, Watts: 2, Workers: 10, PeakRate: 3}}
		},
		want: want{units: [2]int{10, 1}, switches: [2]int{2, 0}, watts: [2]float64{12, 125},
			invPerJ: [2]float64{1.0 / 12, 1.0 / 125}, capex: [2]float64{700, 5000},
			tco: [2]float64{747.3364, 5493.0875}, ratio: 125.0 / 12, change: 747.3364/5493.0875 - 1},
	}, {
		// Both from runs; the VM run's 10 workers at 4 per host are 3
		// hosts. Its 3600 calls over 3600 s took 360000 J (100 W): 0.01
		// inv/J; capex 15000; opex 100 · 8.766 · 0.45 = 394.47. Boards
		// as above without a switch: 2 W, 0.5 inv/J, capex 500, opex
		// 2 · 8.766 · 0.45 = 7.8894.
		name: "both from runs",
		edit: func(f *File) [2]*RunStats {
			f.Workload = nil
			f.Platforms[0].Model, f.Platforms[0].Switch, f.Platforms[0].Run = nil, nil, "b"
			f.Platforms[1].Model, f.Platforms[1].Run, f.Platforms[1].WorkersPerUnit = nil, "v", 4
			return [2]*RunStats{
				{Dir: "b", Invocations: 3600, Seconds: 3600, EnergyJ: 7200, Watts: 2, Workers: 10, PeakRate: 3},
				{Dir: "v", Invocations: 3600, Seconds: 3600, EnergyJ: 360000, Watts: 100, Workers: 10, PeakRate: 3}}
		},
		want: want{units: [2]int{10, 3}, watts: [2]float64{2, 100},
			invPerJ: [2]float64{0.5, 0.01}, capex: [2]float64{500, 15000},
			tco: [2]float64{507.8894, 15394.47}, ratio: 50, change: 507.8894/15394.47 - 1},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := base()
			runs := c.edit(f)
			if err := f.check(); err != nil {
				t.Fatal(err)
			}
			r, err := Compute(f, runs)
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range r.Platforms {
				if p.Units != c.want.units[i] || p.Switches != c.want.switches[i] {
					t.Errorf("%s: %d units, %d switches; want %d, %d", p.Platform.Name, p.Units, p.Switches, c.want.units[i], c.want.switches[i])
				}
				near(t, p.Platform.Name+" watts", p.Watts, c.want.watts[i])
				near(t, p.Platform.Name+" inv/J", p.InvPerJ, c.want.invPerJ[i])
				near(t, p.Platform.Name+" capex", p.Capex, c.want.capex[i])
				near(t, p.Platform.Name+" TCO", p.TCO, c.want.tco[i])
			}
			near(t, "efficiency ratio", r.EfficiencyRatio, c.want.ratio)
			near(t, "TCO change", r.TCOChange, c.want.change)
		})
	}
}

func TestComputeRefusesRunWithoutEnergy(t *testing.T) {
	f := base()
	f.Workload, f.Platforms[0].Model, f.Platforms[0].Run = nil, nil, "r"
	if err := f.check(); err != nil {
		t.Fatal(err)
	}
	_, err := Compute(f, [2]*RunStats{{Dir: "r", Invocations: 10, Seconds: 10, Workers: 2}})
	if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "meter") {
		t.Fatalf("err = %v, want ErrInput naming the meter", err)
	}
}

const good = `
name: t
electricity_price_per_kwh: {value: 0.12, source: "EIA"}
pue: {value: 1.2, source: assumption}
lifetime_years: {value: 5, source: assumption}
workload:
  mean_per_second: {value: 1, source: assumption}
  peak_per_second: {value: 4, source: assumption}
platforms:
  - name: boards
    unit_price: {value: 45, source: "a shop"}
    model:
      throughput_per_unit: {value: 0.2, source: assumption}
      idle_watts: {value: 1.4, source: SRM}
      busy_watts: {value: 2.15, source: SRM}
  - name: vm host
    unit_price: {value: 4000, source: assumption}
    model:
      throughput_per_unit: {value: 10, source: assumption}
      idle_watts: {value: 60, source: assumption}
      busy_watts: {value: 250, source: assumption}
`

func TestParseStrict(t *testing.T) {
	if _, err := Parse([]byte(good)); err != nil {
		t.Fatalf("good file: %v", err)
	}
	cases := []struct{ name, from, to, want string }{
		{"unknown key", "name: t\n", "name: t\nprice: 3\n", "field price not found"},
		{"misspelt key", "unit_price: {value: 45", "unit_cost: {value: 45", "field unit_cost not found"},
		{"no source", `{value: 0.12, source: "EIA"}`, `{value: 0.12}`, "has no source"},
		{"bare number", `pue: {value: 1.2, source: assumption}`, `pue: 1.2`, `write {value: 1.2, source:`},
		{"key inside a number", `{value: 0.12, source: "EIA"}`, `{value: 0.12, src: "EIA"}`, `"src": a number has only value: and source:`},
		{"text for a value", `{value: 0.12, source: "EIA"}`, `{value: cheap, source: "EIA"}`, "value: want a number"},
		{"missing price", "electricity_price_per_kwh: {value: 0.12, source: \"EIA\"}\n", "", "electricity_price_per_kwh: missing"},
		{"pue below 1", "pue: {value: 1.2", "pue: {value: 0.8", "pue: value 0.8"},
		{"busy below idle", "busy_watts: {value: 2.15", "busy_watts: {value: 1", "busy_watts: value 1"},
		{"no run nor model", "    model:\n      throughput_per_unit: {value: 0.2, source: assumption}\n      idle_watts: {value: 1.4, source: SRM}\n      busy_watts: {value: 2.15, source: SRM}\n", "", "give run:"},
		{"run and model", "  - name: boards\n", "  - name: boards\n    run: runs/x\n", "not more"},
		{"simulate and model", "  - name: boards\n", "  - name: boards\n    simulate: {experiment: e.yaml, p99_target_ms: {value: 1, source: assumption}}\n", "not more"},
		{"one platform", "  - name: vm host\n    unit_price: {value: 4000, source: assumption}\n    model:\n      throughput_per_unit: {value: 10, source: assumption}\n      idle_watts: {value: 60, source: assumption}\n      busy_watts: {value: 250, source: assumption}\n", "", "exactly two"},
		{"no lifetime", "lifetime_years: {value: 5, source: assumption}\n", "", "lifetime_years: missing"},
		{"zero throughput", "throughput_per_unit: {value: 0.2", "throughput_per_unit: {value: 0", "above 0"},
		{"no workload", "workload:\n  mean_per_second: {value: 1, source: assumption}\n  peak_per_second: {value: 4, source: assumption}\n", "", "give workload:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := strings.Replace(good, c.from, c.to, 1)
			if text == good {
				t.Fatalf("the edit %q did not apply", c.from)
			}
			_, err := Parse([]byte(text))
			if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrInput with %q", err, c.want)
			}
		})
	}
}

// The report shows every input with its source, marks assumptions, and
// says the paper's inputs are not reproduced.
func TestHTMLShowsSources(t *testing.T) {
	f := base()
	if err := f.check(); err != nil {
		t.Fatal(err)
	}
	r, err := Compute(f, [2]*RunStats{})
	if err != nil {
		t.Fatal(err)
	}
	var page, text bytes.Buffer
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	h := page.String()
	inputs := f.Inputs()
	if len(inputs) != 17 {
		t.Errorf("%d inputs listed, want 17 (price, PUE, 2 workload, 2×2 price and lifetime, 2×3 model, 3 switch)", len(inputs))
	}
	for _, in := range inputs {
		src := in.N.Source
		if in.N.IsAssumption() {
			src = strings.TrimSpace(src[len(Assumption):])
		}
		row := "<td>" + esc(in.Name) + "</td>"
		i := strings.Index(h, row)
		if i < 0 {
			t.Errorf("input %q not in the page", in.Name)
			continue
		}
		end := i + strings.Index(h[i:], "</tr>")
		if !strings.Contains(h[i:end], esc(src)) {
			t.Errorf("input %q: its source %q not on its row: %s", in.Name, src, h[i:end])
		}
		if in.N.IsAssumption() != strings.Contains(h[i:end], `<span class="model">assumption</span>`) {
			t.Errorf("input %q: assumption mark wrong on its row: %s", in.Name, h[i:end])
		}
		if !strings.Contains(text.String(), in.N.Source) {
			t.Errorf("input %q: source %q not in the text", in.Name, in.N.Source)
		}
	}
	for _, s := range []string{esc(NotReproduced), esc(Method), "3.68×", "-77.5%", "5.6×", "-34.2%"} {
		if !strings.Contains(h, s) {
			t.Errorf("page lacks %q", s)
		}
	}
}

func TestParseSimulate(t *testing.T) {
	model := "    model:\n      throughput_per_unit: {value: 0.2, source: assumption}\n      idle_watts: {value: 1.4, source: SRM}\n      busy_watts: {value: 2.15, source: SRM}\n"
	noLoad := strings.Replace(good, "workload:\n  mean_per_second: {value: 1, source: assumption}\n  peak_per_second: {value: 4, source: assumption}\n", "", 1)
	cases := []struct{ name, sim, want string }{
		{"ok", "{experiment: e.yaml, profile: p.yaml, policy: reboot-while-queued, p99_target_ms: {value: 8000, source: assumption}}", ""},
		{"no profile", "{experiment: e.yaml, p99_target_ms: {value: 8000, source: assumption}}", "give experiment: (an experiment file) and profile:"},
		{"bad policy", "{experiment: e.yaml, profile: p.yaml, policy: sometimes, p99_target_ms: {value: 8000, source: assumption}}", "policy"},
		{"no target", "{experiment: e.yaml, profile: p.yaml}", "p99_target_ms: missing"},
		{"target unsourced", "{experiment: e.yaml, profile: p.yaml, p99_target_ms: {value: 8000}}", "has no source"},
		{"unknown key", "{experiment: e.yaml, profile: p.yaml, workers: 3, p99_target_ms: {value: 8000, source: assumption}}", "field workers not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := strings.Replace(noLoad, model, "    simulate: "+c.sim+"\n", 1)
			f, err := Parse([]byte(text))
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if f.Platforms[0].Simulate.MaxWorkers != 1000 {
					t.Errorf("max_workers %d, want the default 1000", f.Platforms[0].Simulate.MaxWorkers)
				}
				return
			}
			if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrInput with %q", err, c.want)
			}
		})
	}
}

// A simulate: platform gets the fewest workers that keep the target: that
// count does, one fewer does not (checked by simulating both again).
func TestSimulateSizing(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("e.yaml", "name: e\nworkers: {qemu: 1}\nfunctions: [matmul]\ninvocations: 60\narrival: {process: poisson, rate: 2}\nseed: 7\n")
	write("p.yaml", "name: p\nkind: bbb\nsource: test\nboot: {dist: const, mean: 1}\nreboot: {dist: const, mean: 0.8}\nshutdown: {dist: const, mean: 0.2}\n"+
		"exec: {default: {dist: const, mean: 0.1}}\npower: {baseline_watts: 2, watts: {booting: 2, idle: 1, working: 2, stopping: 1}}\n")
	model := "    model:\n      throughput_per_unit: {value: 0.2, source: assumption}\n      idle_watts: {value: 1.4, source: SRM}\n      busy_watts: {value: 2.15, source: SRM}\n"
	noLoad := strings.Replace(good, "workload:\n  mean_per_second: {value: 1, source: assumption}\n  peak_per_second: {value: 4, source: assumption}\n", "", 1)
	write("c.yaml", strings.Replace(noLoad, model, "    simulate: {experiment: e.yaml, profile: p.yaml, policy: reboot-while-queued, max_workers: 40, p99_target_ms: {value: 1500, source: assumption}}\n", 1))
	f, err := Load(filepath.Join(dir, "c.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	runs, err := LoadRuns(f)
	if err != nil {
		t.Fatal(err)
	}
	n := runs[0].Workers
	if n < 2 || runs[0].P99 > 1500 || runs[0].Invocations != 60 || runs[0].Sized == "" {
		t.Fatalf("sized run %+v: want at least 2 workers, p99 <= 1500 ms, 60 calls", runs[0])
	}
	spec, raw, err := experiment.Load(filepath.Join(dir, "e.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	prof, err := profile.Load(filepath.Join(dir, "p.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []int{n - 1, n} {
		pol, _ := cluster.ParsePolicy("reboot-while-queued")
		r, err := sim.Run(sim.Config{Spec: spec, File: raw, Profile: prof, ProfileFile: []byte("x"), Workers: w, Policy: pol})
		if err != nil {
			t.Fatal(err)
		}
		if meets := r.P99 <= 1500 && r.Summary.Failed == 0; meets != (w == n) {
			t.Errorf("%d workers: p99 %.0f ms, %d failed: meets the target %v, want %v", w, r.P99, r.Summary.Failed, meets, w == n)
		}
	}
	res, err := Compute(f, runs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Platforms[0].Units != n || !strings.Contains(res.Platforms[0].UnitsHow, "bisection") {
		t.Errorf("units %d (%s), want %d by bisection", res.Platforms[0].Units, res.Platforms[0].UnitsHow, n)
	}
	// An unreachable target is refused with the fix.
	write("c2.yaml", strings.Replace(noLoad, model, "    simulate: {experiment: e.yaml, profile: p.yaml, max_workers: 5, p99_target_ms: {value: 10, source: assumption}}\n", 1))
	f, err = Load(filepath.Join(dir, "c2.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRuns(f); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "raise simulate: max_workers") {
		t.Errorf("unreachable target: err = %v", err)
	}
}

// A real simulated run folder, read back through the report: the
// platform's invocations per joule are the run's successful calls over
// its meter's energy, its units its workers.
func TestFromSimulatedRun(t *testing.T) {
	dir := t.TempDir()
	c := func(v float64) profile.Dist { return profile.Dist{Dist: profile.Const, Mean: v} }
	prof := &profile.Profile{Name: "const", Kind: "bbb", Source: "test", Boot: c(1), Reboot: c(0.8), Shutdown: c(0.2),
		Exec: map[string]profile.Dist{"default": c(0.1)}, Overhead: c(0),
		Power: profile.Power{BaselineWatts: 2, Watts: map[state.Name]float64{state.Booting: 2, state.Idle: 1, state.Working: 2, state.Stopping: 1}}}
	if err := prof.Check(); err != nil {
		t.Fatal(err)
	}
	spec := &experiment.Spec{Name: "t", Functions: []string{"matmul"}, Invocations: 30,
		Arrival: experiment.ArrivalSpec{Process: experiment.Poisson, Rate: 0.5}, Seed: 7,
		Mode: experiment.PowerCycled, Timeout: experiment.Duration(2 * time.Minute)}
	if _, err := sim.Run(sim.Config{Spec: spec, File: []byte("name: t\n"), Profile: prof, ProfileFile: []byte("name: const\n"),
		Workers: 3, Dir: filepath.Join(dir, "runs", "boards")}); err != nil {
		t.Fatal(err)
	}
	cost := strings.Replace(strings.Replace(good, "workload:\n  mean_per_second: {value: 1, source: assumption}\n  peak_per_second: {value: 4, source: assumption}\n", "", 1),
		"  - name: boards\n", "  - name: boards\n    run: runs/boards\n", 1)
	cost = strings.Replace(cost, "    model:\n      throughput_per_unit: {value: 0.2, source: assumption}\n      idle_watts: {value: 1.4, source: SRM}\n      busy_watts: {value: 2.15, source: SRM}\n", "", 1)
	path := filepath.Join(dir, "cost.yaml")
	if err := os.WriteFile(path, []byte(cost), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	runs, err := LoadRuns(f)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Compute(f, runs)
	if err != nil {
		t.Fatal(err)
	}
	run := runs[0]
	if !run.Simulated || !run.MeterModel || run.Invocations != 30 || run.Workers != 3 {
		t.Fatalf("run stats %+v: want 30 simulated invocations on 3 workers with a model meter", run)
	}
	b := r.Platforms[0]
	if b.Units != 3 {
		t.Errorf("boards: %d units, want the run's 3 workers", b.Units)
	}
	near(t, "boards inv/J", b.InvPerJ, 30/run.EnergyJ)
	// The baseline alone is 2 W, so the mean power is above it and below
	// the most three working boards and the baseline draw (8 W).
	if b.Watts <= 2 || b.Watts >= 8 {
		t.Errorf("boards: mean power %.3f W, want between 2 and 8", b.Watts)
	}
	near(t, "load mean", r.Load.Mean, 30/run.Seconds)
	if r.Load.Peak < r.Load.Mean {
		t.Errorf("peak %.3f/s below the mean %.3f/s", r.Load.Peak, r.Load.Mean)
	}
	// The VM host is sized to the run's peak.
	if want := int(math.Ceil(r.Load.Peak / 10)); r.Platforms[1].Units != want {
		t.Errorf("vm host: %d units, want ⌈%.3f/10⌉ = %d", r.Platforms[1].Units, r.Load.Peak, want)
	}
}
