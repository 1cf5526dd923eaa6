package orchestrator

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// testWatts is the power of a board in each state, above the baseline.
var testWatts = map[state.Name]float64{state.Booting: 3, state.Idle: 1.5, state.Working: 5, state.Stopping: 2}

const testBaseline = 10.0

// stripMeter stands in for a meter on the power strip (no meter runs
// here): every 5 ms it reports the power the workers' current states draw.
// It is fed by OnStateChange, independently of the orchestrator's own
// energy accounting.
type stripMeter struct {
	mu    sync.Mutex
	state map[string]state.Name
}

func (m *stripMeter) observe(c state.Change) {
	m.mu.Lock()
	m.state[c.Worker] = c.To
	m.mu.Unlock()
}

func (m *stripMeter) run(ctx context.Context, emit func(energy.Sample)) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		m.mu.Lock()
		w := testBaseline
		for _, s := range m.state {
			w += testWatts[s]
		}
		m.mu.Unlock()
		emit(energy.Sample{At: time.Now(), Watts: w, Source: "model:test-strip"})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// energyHarness runs an orchestrator with energy accounting, a results CSV
// and the strip meter; the calibrated model makes each invocation's
// joules depend only on its intervals, so they cannot change after the
// orchestrator calls them final.
func energyHarness(t *testing.T, workers int, cfg Config, meter bool) (*harness, *energy.Accountant, *bytes.Buffer, *rowLog, func()) {
	t.Helper()
	acc := &energy.Accountant{Model: &energy.StateModel{Source: "calibration", BaselineWatts: testBaseline, Watts: testWatts}}
	var csvBuf syncWriter
	rec, err := NewEnergyCSVRecorder(&csvBuf, true)
	if err != nil {
		t.Fatal(err)
	}
	m := &stripMeter{state: map[string]state.Name{}}
	rows := &rowLog{next: rec, done: map[string]chan struct{}{}}
	onChange := cfg.OnStateChange
	cfg.Energy, cfg.Recorder = acc, rows
	cfg.OnStateChange = func(c state.Change) {
		m.observe(c)
		if onChange != nil {
			onChange(c)
		}
	}
	cfg.EnergyEvery, cfg.EnergyWait = 20*time.Millisecond, 500*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if meter {
		wg.Add(1)
		go func() { defer wg.Done(); m.run(ctx, acc.Add) }()
	}
	h := newHarness(t, workers, cfg)
	h.sim.BootDelay = 30 * time.Millisecond
	shutdown := func() {
		h.orch.Close()
		cancel()
		wg.Wait()
	}
	t.Cleanup(shutdown)
	return h, acc, &csvBuf.b, rows, shutdown
}

// rowLog passes rows on to the results CSV and wakes whoever waits for
// one: a row reaches the Recorder once its energy is final, so it is the
// event the tests wait on.
type rowLog struct {
	next Recorder
	mu   sync.Mutex
	n    int
	done map[string]chan struct{} // by invocation, closed when its row is written
}

func (r *rowLog) ch(id string) chan struct{} {
	c, ok := r.done[id]
	if !ok {
		c = make(chan struct{})
		r.done[id] = c
	}
	return c
}

func (r *rowLog) Record(inv *Invocation) {
	r.next.Record(inv)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	if c := r.ch(inv.ID); !closed(c) {
		close(c)
	}
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// count is how many rows were written.
func (r *rowLog) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// wait blocks until inv's row is written.
func (r *rowLog) wait(t *testing.T, inv *Invocation, timeout time.Duration) {
	t.Helper()
	r.mu.Lock()
	c := r.ch(inv.ID)
	r.mu.Unlock()
	select {
	case <-c:
	case <-time.After(timeout):
		t.Fatalf("invocation %s: no row (its energy is not final) %s after it finished", inv.ID, timeout)
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// readRows parses the results CSV into maps by column.
func readRows(t *testing.T, b []byte) []map[string]string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 || strings.Join(recs[0], ",") != strings.Join(EnergyCSVHeader, ",") {
		t.Fatalf("header %v, want %v", recs, EnergyCSVHeader)
	}
	var rows []map[string]string
	for _, r := range recs[1:] {
		row := map[string]string{}
		for i, c := range recs[0] {
			row[c] = r[i]
		}
		rows = append(rows, row)
	}
	return rows
}

func num(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return f
}

func TestEnergyPerInvocationEndToEnd(t *testing.T) {
	h, acc, csvOut, written, shutdown := energyHarness(t, 2, Config{}, true)
	var invs []*Invocation
	for i := 0; i < 5; i++ {
		inv, err := h.orch.Invoke(context.Background(), "cascading_md5", json.RawMessage(`{"data":"e","rounds":1000}`), 0)
		if err != nil || inv.Err != nil {
			t.Fatalf("invoke: %v %v", err, inv.Err)
		}
		invs = append(invs, inv)
	}
	// Each one's energy becomes final after its worker went off and the
	// meter reported past that; the API shows it then.
	srv := httptest.NewServer(h.orch.Handler())
	defer srv.Close()
	for _, inv := range invs {
		written.wait(t, inv, 5*time.Second)
		if h.orch.Energy(inv) == nil {
			t.Fatalf("invocation %s: its row is written but it has no energy", inv.ID)
		}
		resp, err := http.Get(srv.URL + "/invocations/" + inv.ID)
		if err != nil {
			t.Fatal(err)
		}
		var r InvokeResponse
		json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if r.Energy == nil || r.Energy.Kind != "model" || r.Energy.Source != "model:test-strip" || r.Energy.ExecJ <= 0 || r.Energy.BootJ <= 0 || r.Energy.ShutdownJ <= 0 {
			t.Errorf("GET /invocations/%s energy = %+v; want boot, exec and shutdown joules, kind model", inv.ID, r.Energy)
		}
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`microfaas_energy_joules_total{function="cascading_md5",kind="model",state="working",worker="vm`,
		`microfaas_energy_unattributed_joules{kind="model"}`, `microfaas_energy_meter_joules{kind="model"}`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	shutdown()

	// Every row has its energy; with them the unattributed part adds up
	// to the meter's total.
	res := h.orch.EnergyResult()
	rows := readRows(t, csvOut.Bytes())
	if len(rows) != len(invs) {
		t.Fatalf("%d rows, want %d", len(rows), len(invs))
	}
	var sum float64
	for _, r := range rows {
		j := num(t, r["energy_j"])
		parts := num(t, r["energy_boot_j"]) + num(t, r["energy_exec_j"]) + num(t, r["energy_shutdown_j"]) + num(t, r["energy_idle_j"])
		if j <= 0 || math.Abs(parts-j) > 0.002 || r["energy_source"] != "model:test-strip" {
			t.Errorf("row %v: energy does not add up", r)
		}
		sum += j
	}
	if got := sum + res.Unattributed.TotalJ(); math.Abs(got-res.TotalJ) > 1e-3*res.TotalJ {
		t.Errorf("rows %.3f J + unattributed %.3f J = %.3f J; meter %.3f J", sum, res.Unattributed.TotalJ(), got, res.TotalJ)
	}
	if acc.Latest().IsZero() {
		t.Error("the meter reported nothing")
	}
}

// TestEnergyRowHeldWhileWorkerUp: a worker kept up for more work still
// owes its idle time and shutdown to the invocation it ran, so the row
// waits for the worker to go off.
func TestEnergyRowHeldWhileWorkerUp(t *testing.T) {
	// When the worker starts going off, after its idle second (some 50
	// attribution rounds), no row may have been written yet.
	var written *rowLog
	var worked bool
	rowsAtStop := -1
	cfg := Config{IdleTimeout: time.Second, OnStateChange: func(c state.Change) {
		worked = worked || c.To == state.Working
		if worked && rowsAtStop < 0 && (c.To == state.Stopping || c.To == state.Off) {
			rowsAtStop = written.count()
		}
	}}
	h, _, csvOut, written, shutdown := energyHarness(t, 1, cfg, true)
	inv, err := h.orch.Invoke(context.Background(), "cascading_md5", json.RawMessage(`{"data":"e","rounds":10}`), 0)
	if err != nil || inv.Err != nil {
		t.Fatalf("invoke: %v %v", err, inv.Err)
	}
	written.wait(t, inv, 5*time.Second)
	if h.orch.Energy(inv) == nil {
		t.Fatal("no energy after the idle worker went off")
	}
	shutdown() // the loop has stopped: rowsAtStop is settled
	if rowsAtStop != 0 {
		t.Fatalf("%d rows written before the worker started going off, want 0; csv:\n%s", rowsAtStop, csvOut.String())
	}
	rows := readRows(t, csvOut.Bytes())
	if len(rows) != 1 || num(t, rows[0]["energy_idle_j"]) < 0.9*1.5 {
		t.Errorf("rows %v: want one, charged about 1 s of idle at 1.5 W", rows)
	}
}

// TestEnergyNoMeterStillRecords: rows are written at shutdown, without
// energy, when the meter never reported.
func TestEnergyNoMeterStillRecords(t *testing.T) {
	h, _, csvOut, _, shutdown := energyHarness(t, 1, Config{}, false)
	inv, err := h.orch.Invoke(context.Background(), "cascading_md5", json.RawMessage(`{"data":"e","rounds":10}`), 0)
	if err != nil || inv.Err != nil {
		t.Fatalf("invoke: %v %v", err, inv.Err)
	}
	start := time.Now()
	shutdown()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v; the wait for the meter is bounded by EnergyWait", d)
	}
	rows := readRows(t, csvOut.Bytes())
	if len(rows) != 1 || rows[0]["invocation"] != inv.ID || rows[0]["energy_j"] != "" {
		t.Errorf("rows %v: want the invocation's row with empty energy", rows)
	}
	if !strings.Contains(h.logs.String(), "no attribution at shutdown") {
		t.Error("the missing energy was not logged")
	}
}

// scrape sums the /metrics samples whose line starts with prefix.
func scrape(t *testing.T, o *Orchestrator, prefix string) float64 {
	t.Helper()
	rr := httptest.NewRecorder()
	o.Handler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	var sum float64
	for _, line := range strings.Split(rr.Body.String(), "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			sum += num(t, f[len(f)-1])
		}
	}
	return sum
}

// TestEnergyTrimsHistory: with a short EnergyKeep the history is trimmed
// as the run goes, yet every invocation gets the energy an untrimmed
// attribution gives it, and the meter's running total stays exact.
func TestEnergyTrimsHistory(t *testing.T) {
	model := &energy.StateModel{Source: "calibration", BaselineWatts: testBaseline, Watts: testWatts}
	acc := &energy.Accountant{Model: model}
	full := &energy.Accountant{Model: model} // the same data, never trimmed
	m := &stripMeter{state: map[string]state.Name{}}
	var csvBuf syncWriter
	rec, err := NewEnergyCSVRecorder(&csvBuf, true)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Energy: acc, Recorder: rec, EnergyEvery: 20 * time.Millisecond, EnergyWait: 500 * time.Millisecond,
		EnergyKeep: 100 * time.Millisecond, IdleTimeout: 50 * time.Millisecond,
		OnStateChange: func(c state.Change) {
			m.observe(c)
			full.Observe(c)
		}}
	ctx, cancel := context.WithCancel(context.Background())
	meterDone := make(chan struct{})
	go func() {
		defer close(meterDone)
		m.run(ctx, func(s energy.Sample) { acc.Add(s); full.Add(s) })
	}()
	defer func() { cancel(); <-meterDone }()
	h := newHarness(t, 1, cfg)
	h.sim.BootDelay = 30 * time.Millisecond
	for i := 0; i < 6; i++ {
		inv, err := h.orch.Invoke(context.Background(), "cascading_md5", json.RawMessage(`{"data":"e","rounds":10}`), 0)
		if err != nil || inv.Err != nil {
			t.Fatalf("invoke: %v %v", err, inv.Err)
		}
		time.Sleep(time.Duration(i%3) * 150 * time.Millisecond)
	}
	h.orch.Close()
	cancel()
	<-meterDone

	kept, all := len(acc.Samples()), len(full.Samples())
	t.Logf("%d of %d samples kept", kept, all)
	if kept > all/2 {
		t.Errorf("%d of %d samples kept: the history was not trimmed", kept, all)
	}
	// The untrimmed attribution of what the orchestrator saw (the meter
	// ran a little past its last attribution).
	end := h.orch.EnergyResult().End
	var samples []energy.Sample
	for _, s := range full.Samples() {
		if !s.At.After(end) {
			samples = append(samples, s)
		}
	}
	fres, err := energy.Attribute(energy.Input{Samples: samples, Intervals: full.Intervals(end), Model: model})
	if err != nil {
		t.Fatal(err)
	}
	rows := readRows(t, csvBuf.b.Bytes())
	if len(rows) != 6 {
		t.Fatalf("%d rows, want 6", len(rows))
	}
	for _, r := range rows {
		e := fres.Invocations[r["invocation"]]
		if e == nil || math.Abs(num(t, r["energy_j"])-e.TotalJ()) > 0.002 {
			t.Errorf("row %s: %s J, untrimmed attribution %+v", r["invocation"], r["energy_j"], e)
		}
	}
	meter := scrape(t, h.orch, `microfaas_energy_meter_joules{`)
	if math.Abs(meter-fres.TotalJ) > 1e-6*fres.TotalJ {
		t.Errorf("meter gauge %.6f J, the whole run %.6f J", meter, fres.TotalJ)
	}
	charged := scrape(t, h.orch, `microfaas_energy_joules_total{`)
	unattributed := scrape(t, h.orch, `microfaas_energy_unattributed_joules{`)
	if math.Abs(charged+unattributed-meter) > 1e-6*meter {
		t.Errorf("joules_total %.4f + unattributed %.4f != meter %.4f", charged, unattributed, meter)
	}
}
