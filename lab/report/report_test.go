package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/energy"
)

// writeSynthRun writes a run folder of n invocations of the 17-function
// suite on 3 workers, power-cycled, with meter samples, a timeline and
// model energy columns: the shape mforch experiment writes, with made-up
// but plausible numbers (boot ~bootMS, exec by function).
func writeSynthRun(t testing.TB, dir, name string, n int, bootMS float64, seed uint64) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	fns := []string{"cascading_md5", "cascading_sha256", "download_file", "float_operations", "html_generation", "matmul",
		"psql_inventory", "psql_purchase", "pyaes", "read_kafka", "redis_insert", "redis_modify", "regex_match",
		"regex_search", "upload_file", "upload_kafka", "zlib_decompress"}
	rng := rand.New(rand.NewPCG(seed, 2))
	start := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	free := map[string]time.Time{"vm0": start, "vm1": start, "vm2": start}
	var res, tl bytes.Buffer
	rw, tw := csv.NewWriter(&res), csv.NewWriter(&tl)
	rw.Write([]string{"invocation", "function", "worker", "attempts", "queued", "powered_on", "connected", "started", "finished",
		"boot_init_ms", "boot_network_ms", "boot_connected_ms", "exec_ms", "latency_ms", "result_bytes", "timed_out", "error",
		"energy_j", "energy_boot_j", "energy_exec_j", "energy_shutdown_j", "energy_idle_j", "energy_source"})
	tw.Write([]string{"worker", "state", "start_unix_ns", "end_unix_ns", "invocation"})
	ts := func(t time.Time) string { return t.Format(time.RFC3339Nano) }
	ns := func(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }
	q := start
	end := start
	for i := range n {
		q = q.Add(time.Duration(rng.ExpFloat64() * float64(500*time.Millisecond)))
		fn := fns[i%len(fns)]
		w := "vm0"
		for _, id := range []string{"vm1", "vm2"} {
			if free[id].Before(free[w]) {
				w = id
			}
		}
		on := q
		if free[w].After(on) {
			on = free[w]
		}
		boot := time.Duration((bootMS + rng.NormFloat64()*bootMS/10) * float64(time.Millisecond))
		conn := on.Add(boot)
		started := conn.Add(2 * time.Millisecond)
		exec := 5 + float64(i%len(fns))*20 + rng.Float64()*10
		fin := started.Add(time.Duration(exec*float64(time.Millisecond)) + 3*time.Millisecond)
		free[w] = fin.Add(300 * time.Millisecond)
		if fin.After(end) {
			end = fin
		}
		errText := ""
		if i == 7 {
			errText = "regex_search: worker vm1 connection lost mid-job"
		}
		lat := float64(fin.Sub(q)) / 1e6
		ej := 0.6*boot.Seconds() + 0.5*exec/1000
		rw.Write([]string{fmt.Sprintf("inv%04d", i), fn, w, "1", ts(q), ts(on), ts(conn), ts(started), ts(fin),
			"400", "500", fmt.Sprintf("%.3f", float64(boot)/1e6), fmt.Sprintf("%.3f", exec), fmt.Sprintf("%.3f", lat), "64", "false", errText,
			fmt.Sprintf("%.4f", ej), "0", "0", "0", "0", "model:cpu-time"})
		tw.Write([]string{w, "booting", ns(on), ns(conn), ""})
		tw.Write([]string{w, "working", ns(started), ns(fin), fmt.Sprintf("inv%04d", i)})
		tw.Write([]string{w, "stopping", ns(fin), ns(free[w]), ""})
	}
	rw.Flush()
	tw.Flush()
	var m bytes.Buffer
	m.WriteString("t_unix_ns,watts,source\n")
	for t := start; t.Before(end); t = t.Add(time.Second) {
		fmt.Fprintf(&m, "%d,%.2f,measured:wattsup\n", t.UnixNano(), 3+rng.Float64()*2)
	}
	sum := Summary{Name: name, Started: start, Finished: end.Add(100 * time.Millisecond), Planned: n, Done: n, Failed: 1,
		Workers: 3, WorkerKind: "qemu", Mode: "power-cycled", Arrival: "poisson", Rate: 2, Seed: 63302, Functions: fns,
		Meter: "wattsup", Host: HostFacts{CPU: "test CPU", Cores: 2, Accel: "tcg", QEMU: "QEMU emulator version 7.2.0", Kernel: "6.1"}}
	b, _ := json.Marshal(sum)
	for f, data := range map[string][]byte{ResultsFile: res.Bytes(), TimelineFile: tl.Bytes(), MeterFile: m.Bytes(), SummaryFile: b} {
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoadAndAnalyzeSynthetic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a")
	writeSynthRun(t, dir, "a", 170, 1500, 1)
	run, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := Analyze(run)
	if a.Total != 170 || a.Failed != 1 || len(a.Functions) != 17 || len(a.Workers) != 3 {
		t.Fatalf("total %d failed %d functions %d workers %d", a.Total, a.Failed, len(a.Functions), len(a.Workers))
	}
	if !a.EnergyRows || !a.EnergyModel {
		t.Errorf("energy rows %v model %v: the CSV's source is model:cpu-time", a.EnergyRows, a.EnergyModel)
	}
	// The synthetic boot is 1.5 s; every invocation waited for its boot.
	if a.All.Boot < 1200 || a.All.Boot > 1800 {
		t.Errorf("mean boot %.0f ms, want about 1500", a.All.Boot)
	}
	if a.MeanWatts < 3 || a.MeanWatts > 5 {
		t.Errorf("mean power %.2f W outside the samples' 3..5 W", a.MeanWatts)
	}
	var text bytes.Buffer
	WriteText(&text, []*Analysis{a})
	if !strings.Contains(text.String(), "(model)") {
		t.Errorf("model energy not labelled model:\n%s", text.String())
	}
}

func TestLoadToleratesMissingFilesAndTornLine(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); !errors.Is(err, ErrNotRun) {
		t.Fatalf("empty folder: %v, want ErrNotRun", err)
	}
	csvText := "invocation,function,worker,attempts,queued,powered_on,connected,started,finished,boot_init_ms,boot_network_ms,boot_connected_ms,exec_ms,latency_ms,result_bytes,timed_out,error\n" +
		"a,matmul,vm0,1,2026-11-30T10:00:00Z,2026-11-30T10:00:00Z,2026-11-30T10:00:01Z,2026-11-30T10:00:01Z,2026-11-30T10:00:01.5Z,1,1,900,400,1500,3,false,\n" +
		"b,matmul,vm0,1,2026-11-30T10:00:00Z,,,2026-11-30T1" // torn by an interrupted write
	os.WriteFile(filepath.Join(dir, ResultsFile), []byte(csvText), 0o644)
	run, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Rows) != 1 || !run.TimelineDerived || run.HasSum || len(run.Meter) != 0 {
		t.Fatalf("rows %d derived %v summary %v meter %d", len(run.Rows), run.TimelineDerived, run.HasSum, len(run.Meter))
	}
	a := Analyze(run)
	s := a.All
	if s.Boot != 1000 || s.Exec != 400 || s.Wait != 0 || math.Abs(s.Overhead-100) > 1e-9 {
		t.Errorf("split boot %v exec %v wait %v overhead %v; want 1000, 400, 0, 100", s.Boot, s.Exec, s.Wait, s.Overhead)
	}
	var page bytes.Buffer
	if err := WriteHTML(&page, []*Analysis{a}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), "No meter samples") || !strings.Contains(page.String(), "No energy data") {
		t.Error("the page does not say the meter and energy are missing")
	}
}

func TestSplitOf(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		name string
		row  Row
		want Split
	}{
		{"fresh boot", Row{Queued: at(0), PoweredOn: at(0), Connected: at(1000), Started: at(1010), ExecMS: 50, LatencyMS: 1070},
			Split{Wait: 10, Boot: 1000, Exec: 50, Overhead: 10}},
		{"warm worker", Row{Queued: at(5000), PoweredOn: at(0), Connected: at(1000), Started: at(5002), ExecMS: 50, LatencyMS: 60},
			Split{Wait: 2, Boot: 0, Exec: 50, Overhead: 8}},
		{"queued behind others, then a boot", Row{Queued: at(0), PoweredOn: at(3000), Connected: at(4000), Started: at(4000), ExecMS: 10, LatencyMS: 4020},
			Split{Wait: 3000, Boot: 1000, Exec: 10, Overhead: 10}},
		{"boot started before queueing", Row{Queued: at(500), PoweredOn: at(0), Connected: at(1000), Started: at(1000), ExecMS: 10, LatencyMS: 520},
			Split{Wait: 0, Boot: 500, Exec: 10, Overhead: 10}},
		{"never started", Row{Queued: at(0), LatencyMS: 30, Err: "withdrawn"}, Split{Overhead: 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := SplitOf(tc.row); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestEnergyAndPercentile(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := []energy.Sample{{At: t0, Watts: 2}, {At: t0.Add(2 * time.Second), Watts: 4}, {At: t0.Add(4 * time.Second), Watts: 4}}
	for _, tc := range []struct {
		from, to float64
		want     float64
	}{{0, 4, 16}, {0, 2, 8}, {1, 3, 8}, {-1, 5, 16}, {3, 3, 0}} {
		got, _ := Energy(s, t0.Add(time.Duration(tc.from*float64(time.Second))), t0.Add(time.Duration(tc.to*float64(time.Second))))
		if math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Energy(%v..%v) = %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct{ p, want float64 }{{50, 5}, {90, 9}, {95, 10}, {99, 10}, {10, 1}} {
		if got := Percentile(v, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
}

func TestThroughputBins(t *testing.T) {
	t0 := time.Unix(0, 0)
	var rows []Row
	for i := range 120 { // one per second for two minutes
		rows = append(rows, Row{Queued: t0, Finished: t0.Add(time.Duration(i)*time.Second + 500*time.Millisecond)})
	}
	pts, bin := throughput(rows, t0, t0.Add(120*time.Second))
	if bin != 7.5 || len(pts) != 16 {
		t.Fatalf("bin %v s, %d bins; want 7.5 s, 16", bin, len(pts))
	}
	for _, p := range pts {
		if math.Abs(p.Y-60) > 8.1 { // 7 or 8 finishes per 7.5 s bin
			t.Errorf("bin at %v s: %v per minute, want about 60", p.X, p.Y)
		}
	}
}

func TestNiceAxis(t *testing.T) {
	for _, tc := range []struct{ hi, want float64 }{{52, 60}, {1, 1}, {0.9, 1}, {170, 200}, {4990, 5000}, {100, 100}, {0, 1}} {
		if got := niceMax(tc.hi); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("niceMax(%v) = %v, want %v", tc.hi, got, tc.want)
		}
		ticks := niceTicks(0, niceMax(tc.hi), 5)
		if last := ticks[len(ticks)-1]; math.Abs(last-niceMax(tc.hi)) > 1e-9 {
			t.Errorf("ticks for %v end at %v, the axis at %v", tc.hi, last, niceMax(tc.hi))
		}
	}
}
