package experiment_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/testlog"
	"github.com/microfaas/microfaas/internal/testsvc"
	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/lab/loadgen"
	"github.com/microfaas/microfaas/lab/report"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/simworker"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/runtime/functions"
)

// simCluster is a real orchestrator whose workers are simulated
// (simworker: the real worker runtime in goroutines), adapted to
// experiment.Cluster the way cmd/mforch adapts the QEMU one.
type simCluster struct {
	o           *orchestrator.Orchestrator
	stop, close func()
}

func (c *simCluster) Invoke(ctx context.Context, fn string, args json.RawMessage) (experiment.Result, error) {
	inv, err := c.o.Invoke(ctx, fn, args, 0)
	if err != nil {
		return experiment.Result{}, err
	}
	return experiment.Result{ID: inv.ID, Worker: inv.Worker, Err: orchestrator.ErrText(inv.Err)}, nil
}

func startSim(t *testing.T, run *experiment.Run, workers int, idle time.Duration) *simCluster {
	t.Helper()
	return startSimCluster(t, run, workers, idle, nil)
}

func startSimServices(t *testing.T, run *experiment.Run, workers int, services map[string]map[string]string) *simCluster {
	t.Helper()
	return startSimCluster(t, run, workers, 0, services)
}

func startSimCluster(t *testing.T, run *experiment.Run, workers int, idle time.Duration, services map[string]map[string]string) *simCluster {
	t.Helper()
	cl := cluster.Local(workers)
	cl.Services = services
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sim := &simworker.Controller{Orch: ln.Addr().String(), Secret: cl.SecretBytes(), BootDelay: 30 * time.Millisecond}
	f, err := os.Create(run.ResultsPath())
	if err != nil {
		t.Fatal(err)
	}
	rec, err := orchestrator.NewCSVRecorder(f, true)
	if err != nil {
		t.Fatal(err)
	}
	o, err := orchestrator.New(orchestrator.Config{Cluster: cl, Controllers: map[string]power.Controller{cluster.KindVM: sim},
		Recorder: rec, IdleTimeout: idle, PowerOffHoldoff: 50 * time.Millisecond,
		OnStateChange: func(sc state.Change) {
			run.StateChanged(sc)
		},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	go o.Serve(ln)
	c := &simCluster{o: o}
	var once sync.Once
	c.stop = func() { once.Do(c.close) }
	c.close = func() {
		o.Close()
		ln.Close()
		sim.Wait()
		f.Close()
	}
	t.Cleanup(c.stop)
	run.SetWorkers(workers, "sim")
	return c
}

// stepMeter is a test meter: a sample every 10 ms whose power rises with
// each sample, so the integral is not trivially constant, and a per-board
// sample of 100 W beside it, which must stay out of meter.csv.
type stepMeter struct{}

func (stepMeter) Source() string { return "model:test" }

func (stepMeter) Run(ctx context.Context, emit func(energy.Sample)) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	i := 0
	for {
		emit(energy.Sample{At: time.Now(), Watts: 2 + float64(i%5)*0.5, Source: "model:test"})
		emit(energy.Sample{At: time.Now(), Watts: 100, Worker: "sim0", Source: "model:test"})
		i++
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

const computeMix = `
name: sim
workers: {qemu: 3}
functions: [cascading_md5, float_operations, html_generation, matmul, regex_match]
invocations: 40
arrival: {process: poisson, rate: 80}
meter: {driver: cpu-time, model: {idle_watts: 2, watts_per_core: 1}}
services: none
`

// csvRow is the test's own reading of a results row.
type csvRow struct {
	fn, worker, err string
	latency         float64
}

func readCSV(t *testing.T, path string) []csvRow {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	var out []csvRow
	for _, r := range recs[1:] {
		l, err := strconv.ParseFloat(r[col["latency_ms"]], 64)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, csvRow{fn: r[col["function"]], worker: r[col["worker"]], err: r[col["error"]], latency: l})
	}
	return out
}

func nearestRank(v []float64, p float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	k := int(math.Ceil(p / 100 * float64(len(s))))
	return s[k-1]
}

func TestSimulatedExperiment(t *testing.T) {
	spec, err := experiment.Parse([]byte(computeMix))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "run")
	run, err := experiment.Create(dir, spec, []byte(computeMix))
	if err != nil {
		t.Fatal(err)
	}
	c := startSim(t, run, 3, 0)
	var progress testlog.Buffer
	sum, err := run.Execute(context.Background(), c, experiment.Options{Meter: stepMeter{}, Progress: &progress, Tick: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.stop()
	run.Close()
	if sum.Interrupted || sum.Done != 40 || sum.Failed != 0 {
		t.Fatalf("summary: done %d failed %d interrupted %v, want 40 done, 0 failed", sum.Done, sum.Failed, sum.Interrupted)
	}
	if !strings.Contains(progress.String(), "/40 done") {
		t.Errorf("no progress line in %q", progress.String())
	}
	for _, f := range []string{report.ExperimentFile, report.ResultsFile, report.MeterFile, report.TimelineFile, report.SummaryFile} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("run folder: %s missing or empty (%v)", f, err)
		}
	}

	// The test's own numbers, from the CSV and summary.json.
	rows := readCSV(t, filepath.Join(dir, report.ResultsFile))
	if len(rows) != 40 {
		t.Fatalf("results.csv has %d rows, want 40", len(rows))
	}
	var js struct{ Started, Finished time.Time }
	b, _ := os.ReadFile(filepath.Join(dir, report.SummaryFile))
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatal(err)
	}
	perWorker := map[string]int{}
	byFn := map[string][]float64{}
	var all []float64
	for _, r := range rows {
		if r.err != "" {
			t.Errorf("failed invocation: %s", r.err)
		}
		perWorker[r.worker]++
		byFn[r.fn] = append(byFn[r.fn], r.latency)
		all = append(all, r.latency)
	}
	wantPerMin := float64(len(rows)) / js.Finished.Sub(js.Started).Minutes()

	loaded, err := report.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := report.Analyze(loaded)
	if math.Abs(a.PerMinute-wantPerMin) > 1e-6*wantPerMin {
		t.Errorf("throughput %.3f/min, recomputed %.3f", a.PerMinute, wantPerMin)
	}
	for _, p := range []struct {
		got, want float64
		what      string
	}{{a.All.P50, nearestRank(all, 50), "p50"}, {a.All.P95, nearestRank(all, 95), "p95"}, {a.All.P99, nearestRank(all, 99), "p99"}} {
		if p.got != p.want {
			t.Errorf("all %s = %v ms, recomputed %v", p.what, p.got, p.want)
		}
	}
	if len(a.Functions) != len(byFn) {
		t.Errorf("%d functions in the report, %d in the CSV", len(a.Functions), len(byFn))
	}
	for _, s := range a.Functions {
		if s.Count != len(byFn[s.Function]) || s.P50 != nearestRank(byFn[s.Function], 50) || s.P99 != nearestRank(byFn[s.Function], 99) {
			t.Errorf("%s: count %d p50 %v p99 %v; recomputed %d %v %v", s.Function, s.Count, s.P50, s.P99,
				len(byFn[s.Function]), nearestRank(byFn[s.Function], 50), nearestRank(byFn[s.Function], 99))
		}
		if s.Exec <= 0 || s.Boot <= 0 {
			t.Errorf("%s: mean exec %v ms, boot %v ms: a power-cycled run boots for every invocation", s.Function, s.Exec, s.Boot)
		}
	}
	total := 0
	for _, w := range a.Workers {
		if w.Invocations != perWorker[w.Worker] {
			t.Errorf("worker %s: %d invocations in the report, %d in the CSV", w.Worker, w.Invocations, perWorker[w.Worker])
		}
		total += w.Invocations
	}
	if total != 40 || len(a.Workers) != len(perWorker) {
		t.Errorf("workers: %d invocations over %d workers, CSV has 40 over %d", total, len(a.Workers), len(perWorker))
	}
	if loaded.TimelineDerived || len(loaded.Timeline) == 0 {
		t.Errorf("timeline.csv not used (derived %v, %d intervals)", loaded.TimelineDerived, len(loaded.Timeline))
	}
	working := 0
	for _, iv := range loaded.Timeline {
		if iv.State == state.Working && iv.Invocation != "" {
			working++
		}
	}
	if working != 40 {
		t.Errorf("timeline.csv has %d working intervals with an invocation, want one per invocation (40)", working)
	}
	if a.MeanWatts < 2 || a.MeanWatts > 4 {
		t.Errorf("mean power %.2f W outside the meter's 2..4 W", a.MeanWatts)
	}
	for _, m := range loaded.Meter {
		if m.Watts > 4 {
			t.Errorf("meter.csv has a %.1f W sample: a per-board series leaked into the whole meter's", m.Watts)
			break
		}
	}

	// The outputs carry those numbers.
	var text, page bytes.Buffer
	if err := report.WriteText(&text, []*report.Analysis{a}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "meter, model (model:test)") {
		t.Errorf("the text does not label the model meter as a model:\n%s", text.String())
	}
	if want := fmt.Sprintf("%.1f functions per minute", a.PerMinute); !strings.Contains(text.String(), want) {
		t.Errorf("text summary lacks %q:\n%s", want, text.String())
	}
	if err := report.WriteHTML(&page, []*report.Analysis{a, a}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if keep := os.Getenv("MF_KEEP_REPORT"); keep != "" {
		// For looking at the page by hand: MF_KEEP_REPORT=/tmp/x go test ...
		os.MkdirAll(keep, 0o755)
		os.WriteFile(filepath.Join(keep, "report.html"), page.Bytes(), 0o644)
		os.WriteFile(filepath.Join(keep, "summary.txt"), text.Bytes(), 0o644)
	}
	for _, want := range []string{"<svg", "functions per minute", "Latency CDF", "Comparison", "1.00×"} {
		if !strings.Contains(page.String(), want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	if p := page.String(); strings.Contains(p, "<script") || strings.Contains(p, "src=") || strings.Contains(p, "href=\"http") {
		t.Error("HTML has a script or a network reference")
	}
}

// TestInterruptedExperiment cancels a run midway: the folder must still
// load, with the summary marked interrupted.
func TestInterruptedExperiment(t *testing.T) {
	spec, err := experiment.Parse([]byte(strings.Replace(computeMix, "rate: 80", "rate: 20", 1)))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "run")
	run, err := experiment.Create(dir, spec, []byte(computeMix))
	if err != nil {
		t.Fatal(err)
	}
	c := startSim(t, run, 2, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	sum, err := run.Execute(ctx, c, experiment.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.stop()
	run.Close()
	if !sum.Interrupted || sum.Done >= 40 || sum.Done == 0 {
		t.Fatalf("summary: done %d interrupted %v; want some but not all done, interrupted", sum.Done, sum.Interrupted)
	}
	loaded, err := report.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Summary.Interrupted || len(loaded.Rows) != sum.Done {
		t.Errorf("loaded: interrupted %v, %d rows; want interrupted, %d rows", loaded.Summary.Interrupted, len(loaded.Rows), sum.Done)
	}
}

func TestSpecErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml string }{
		{"no invocations", "workers: {qemu: 1}"},
		{"no workers", "invocations: 5"},
		{"both workers", "workers: {qemu: 1, cluster: c.yaml}\ninvocations: 5"},
		{"unknown function", "workers: {qemu: 1}\ninvocations: 5\nfunctions: [nope]"},
		{"bad arrival", "workers: {qemu: 1}\ninvocations: 5\narrival: {process: bursty}"},
		{"no rate", "workers: {qemu: 1}\ninvocations: 5\narrival: {process: uniform}"},
		{"idle when power-cycled", "workers: {qemu: 1}\ninvocations: 5\nidle: 3s"},
		{"unknown key", "workers: {qemu: 1}\ninvocations: 5\nrat: 3"},
		{"bad duration", "workers: {qemu: 1}\ninvocations: 5\nmode: warm\nidle: soon"},
		{"meter word", "workers: {qemu: 1}\ninvocations: 5\nmeter: wattsup"},
		{"meter without driver", "workers: {qemu: 1}\ninvocations: 5\nmeter: {device: /dev/ttyUSB0}"},
		{"bad boot", "workers: {qemu: 1, boot: warm}\ninvocations: 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := experiment.Parse([]byte(tc.yaml)); !errors.Is(err, experiment.ErrSpec) {
				t.Errorf("err = %v, want ErrSpec", err)
			}
		})
	}
	s, err := experiment.Parse([]byte("workers: {qemu: 3}\ninvocations: 170\narrival: {rate: 2}"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Functions) != 17 || s.Mode != experiment.PowerCycled || s.Seed != 63302 {
		t.Errorf("defaults: %d functions, mode %s, seed %d; want the 17, power-cycled, 63302", len(s.Functions), s.Mode, s.Seed)
	}
	counts := map[string]int{}
	for _, c := range s.Calls() {
		counts[c.Function]++
	}
	for fn, n := range counts {
		if n != 10 {
			t.Errorf("%s: %d calls of 170, want an even 10", fn, n)
		}
	}
	if got := functions.ServicesFor(s.Functions); strings.Join(got, ",") != "kafka,postgres,redis,s3" {
		t.Errorf("services for the full mix: %v", got)
	}
}

// TestExampleFiles keeps examples/experiments/ valid.
func TestExampleFiles(t *testing.T) {
	files, _ := filepath.Glob("../../examples/experiments/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example experiment files")
	}
	for _, f := range files {
		if _, _, err := experiment.Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestSimulatedFullMix runs the whole 17-function suite, spread evenly,
// against real Redis, PostgreSQL, S3 and Kafka servers that StartServices
// starts and loads, on simulated workers: every invocation must succeed.
func TestSimulatedFullMix(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	spec, err := experiment.Parse([]byte("name: full\nworkers: {qemu: 3}\ninvocations: 34\narrival: {process: closed-loop}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	settings, stop, err := experiment.StartServices(ctx, functions.ServicesFor(spec.Functions), false)
	var missing *testsvc.MissingError
	if errors.As(err, &missing) && os.Getenv("CI") == "" {
		t.Skipf("a service is not installed: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	dir := filepath.Join(t.TempDir(), "run")
	run, err := experiment.Create(dir, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := startSimServices(t, run, 3, settings)
	sum, err := run.Execute(ctx, c, experiment.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.stop()
	run.Close()
	loaded, err := report.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range loaded.Rows {
		if r.Err != "" {
			t.Errorf("%s failed: %s", r.Function, r.Err)
		}
	}
	a := report.Analyze(loaded)
	if sum.Done != 34 || len(a.Functions) != 17 {
		t.Errorf("%d done over %d functions, want 34 over 17", sum.Done, len(a.Functions))
	}
}

// TestGuestServiceSettings checks what QEMU guests are told: the host as
// they see it, and a Kafka broker that advertises that address.
func TestGuestServiceSettings(t *testing.T) {
	settings, stop, err := experiment.StartServices(context.Background(), []string{"kafka"}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	b := settings["kafka"]["brokers"]
	host, port, err := net.SplitHostPort(b)
	if err != nil || host != experiment.GuestHost {
		t.Fatalf("brokers %q, want %s:PORT", b, experiment.GuestHost)
	}
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		t.Fatalf("the broker does not listen on loopback port %s: %v", port, err)
	}
	c.Close()
}

func TestProgressLine(t *testing.T) {
	for _, tc := range []struct {
		done, failed, total int
		elapsed             time.Duration
		want                string
	}{
		{0, 0, 170, 0, "0/170 done, 0.00/s, 0 failed, ETA ?"},
		{57, 1, 170, 30 * time.Second, "57/170 done, 1.90/s, 1 failed, ETA 59s"},
		{170, 0, 170, 100 * time.Second, "170/170 done, 1.70/s, 0 failed, ETA 0s"},
	} {
		if got := experiment.ProgressLine(tc.done, tc.failed, tc.total, tc.elapsed); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestGapsSeededAndShaped(t *testing.T) {
	parse := func(y string) *experiment.Spec {
		s, err := experiment.Parse([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	p := parse("workers: {qemu: 1}\ninvocations: 2000\narrival: {process: poisson, rate: 4}")
	g1, g2 := p.Gaps(), p.Gaps()
	var sum time.Duration
	for i := range g1 {
		if g1[i] != g2[i] {
			t.Fatal("the same seed gave different gaps")
		}
		sum += g1[i]
	}
	if mean := sum.Seconds() / 1999; mean < 0.22 || mean > 0.28 {
		t.Errorf("poisson mean gap %.3f s, want about 0.25", mean)
	}
	u := parse("workers: {qemu: 1}\ninvocations: 3\narrival: {process: uniform, rate: 2}").Gaps()
	if u[0] != 0 || u[1] != 500*time.Millisecond || u[2] != 500*time.Millisecond {
		t.Errorf("uniform gaps %v", u)
	}
	if g := parse("workers: {qemu: 1}\ninvocations: 3\narrival: {process: closed-loop}").Gaps(); g != nil {
		t.Errorf("closed loop has gaps %v", g)
	}
}

// TestPowerCycledVsWarm runs the same load on power-cycled and on warm
// simulated workers: warm workers boot far less often, and the report's
// comparison says so.
func TestPowerCycledVsWarm(t *testing.T) {
	var runs []*report.Analysis
	for _, mode := range []string{"power-cycled", "warm"} {
		y := "name: " + mode + "\nworkers: {qemu: 3}\nfunctions: [float_operations, matmul, regex_search]\ninvocations: 30\narrival: {process: closed-loop}\nservices: none\nmode: " + mode + "\n"
		spec, err := experiment.Parse([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), mode)
		run, err := experiment.Create(dir, spec, []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		c := startSim(t, run, 3, time.Duration(spec.Idle))
		if _, err := run.Execute(context.Background(), c, experiment.Options{}); err != nil {
			t.Fatal(err)
		}
		c.stop()
		run.Close()
		loaded, err := report.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, report.Analyze(loaded))
	}
	cycled, warm := runs[0], runs[1]
	boots := 0
	for _, w := range cycled.Workers {
		boots += w.Boots
	}
	if boots != 30 {
		t.Errorf("power-cycled: %d boots in the timeline, want 30", boots)
	}
	if cycled.All.Boots != 30 {
		t.Errorf("power-cycled: %d of 30 invocations waited for a boot, want all", cycled.All.Boots)
	}
	if warm.All.Boots > 6 {
		t.Errorf("warm: %d of 30 invocations waited for a boot, want at most a few", warm.All.Boots)
	}
	if warm.All.Boot >= cycled.All.Boot {
		t.Errorf("mean boot: warm %.1f ms, power-cycled %.1f ms", warm.All.Boot, cycled.All.Boot)
	}
	var text, page bytes.Buffer
	report.WriteText(&text, runs)
	report.WriteHTML(&page, runs, time.Now())
	if !strings.Contains(text.String(), "warm ratio") {
		t.Errorf("no comparison in the text:\n%s", text.String())
	}
	if keep := os.Getenv("MF_KEEP_REPORT"); keep != "" {
		os.MkdirAll(keep, 0o755)
		os.WriteFile(filepath.Join(keep, "compare.html"), page.Bytes(), 0o644)
		os.WriteFile(filepath.Join(keep, "compare.txt"), text.Bytes(), 0o644)
	}
}

// TestPathsRelativeToFile: kernel, initrd and cluster given in a file are
// read relative to the file, and a missing one is an ErrSpec naming the fix.
func TestPathsRelativeToFile(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "exp")
	os.MkdirAll(filepath.Join(dir, "out"), 0o755)
	os.MkdirAll(sub, 0o755)
	os.WriteFile(filepath.Join(dir, "out", "bzImage"), []byte("k"), 0o644)
	file := filepath.Join(sub, "e.yaml")
	os.WriteFile(file, []byte("workers: {qemu: 1, kernel: ../out/bzImage, initrd: ../out/initrd}\ninvocations: 1\narrival: {process: closed-loop}\n"), 0o644)
	t.Chdir(t.TempDir()) // elsewhere: the paths must not depend on it
	spec, _, err := experiment.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "out", "bzImage"); spec.Workers.Kernel != want {
		t.Errorf("kernel %s, want %s", spec.Workers.Kernel, want)
	}
	err = spec.CheckInputs()
	if !errors.Is(err, experiment.ErrSpec) || !strings.Contains(err.Error(), "initrd") || !strings.Contains(err.Error(), "make images") {
		t.Errorf("missing initrd: %v, want ErrSpec naming the initrd and how to build it", err)
	}
	os.WriteFile(filepath.Join(dir, "out", "initrd"), []byte("i"), 0o644)
	if err := spec.CheckInputs(); err != nil {
		t.Errorf("with both files: %v", err)
	}
}

// TestOneArrivalGenerator: an experiment file and mforch loadgen with the
// same process, rate and seed give the same schedule.
func TestOneArrivalGenerator(t *testing.T) {
	s, err := experiment.Parse([]byte("workers: {qemu: 1}\ninvocations: 50\nseed: 9\narrival: {process: poisson, rate: 3}"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := loadgen.Arrivals("poisson", 3, 50, 9)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Gaps(); !slices.Equal(got, want) {
		t.Errorf("experiment gaps %v\nloadgen gaps %v", got[:3], want[:3])
	}
}
