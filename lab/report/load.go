// Package report reads experiment run folders (see docs/experiments.md) and
// computes what the original MicroFaaS analysis scripts computed: functions
// per minute over time, latency percentiles and CDFs per function, the
// boot / execution / overhead split of round-trip time, invocations and busy
// time per worker, the power trace under the workers' states, and joules per
// invocation. It writes the results as a self-contained HTML page of inline
// SVG plots (WriteHTML) and as a plain-text table (WriteText).
package report

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// Files of a run folder.
const (
	ResultsFile    = "results.csv"
	MeterFile      = "meter.csv"
	TimelineFile   = "timeline.csv"
	SummaryFile    = "summary.json"
	ExperimentFile = "experiment.yaml"
)

// ErrNotRun says a folder is not a run folder (it has no results CSV).
var ErrNotRun = errors.New("not a run folder")

// Summary is a run's summary.json, written by the experiment runner.
type Summary struct {
	Name        string    `json:"name"`
	Started     time.Time `json:"started"`
	Finished    time.Time `json:"finished"`
	Planned     int       `json:"planned"`
	Done        int       `json:"done"`
	Failed      int       `json:"failed"`
	Interrupted bool      `json:"interrupted"`
	Workers     int       `json:"workers"`
	WorkerKind  string    `json:"worker_kind"` // "qemu", "cluster" or "sim"
	Mode        string    `json:"mode"`        // "power-cycled" or "warm"
	Idle        string    `json:"idle,omitempty"`
	Arrival     string    `json:"arrival"`
	Rate        float64   `json:"rate,omitempty"`
	Concurrency int       `json:"concurrency,omitempty"` // closed loop: callers
	Seed        int64     `json:"seed"`
	Functions   []string  `json:"functions"`
	Meter       string    `json:"meter"`
	Host        HostFacts `json:"host"`
	Note        string    `json:"note,omitempty"`
	// Simulated is set for a run of mforch simulate: no worker ran.
	Simulated *SimFacts `json:"simulated,omitempty"`
}

// SimFacts describe a simulated run (mforch simulate, lab/sim).
type SimFacts struct {
	Profile       string `json:"profile"`        // the profile's name
	ProfileKind   string `json:"profile_kind"`   // bbb or vm
	ProfileSource string `json:"profile_source"` // where its numbers come from
	Policy        string `json:"policy"`
	Trace         string `json:"trace,omitempty"` // the replayed trace file
	Events        int    `json:"events"`          // events the simulator handled
	// SimulatedSeconds is the simulated time; WallSeconds the real time
	// the simulation took.
	SimulatedSeconds float64 `json:"simulated_seconds"`
	WallSeconds      float64 `json:"wall_seconds"`
}

// HostFacts describe the machine a run ran on.
type HostFacts struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	Accel     string `json:"accel,omitempty"` // kvm or tcg for QEMU workers
	QEMU      string `json:"qemu,omitempty"`
	Kernel    string `json:"kernel"` // the host's kernel release
	GoVersion string `json:"go"`
}

// Row is one invocation of the results CSV.
type Row struct {
	Invocation, Function, Worker string
	Attempts                     int
	Queued, PoweredOn, Connected time.Time
	Started, Finished            time.Time
	BootConnectedMS, ExecMS      float64
	LatencyMS                    float64
	Err                          string
	// EnergyJ is set when the CSV has energy columns (HasEnergy).
	EnergyJ      float64
	HasEnergy    bool
	EnergySource string
}

// OK reports whether the invocation succeeded.
func (r Row) OK() bool { return r.Err == "" }

// Run is one loaded run folder.
type Run struct {
	Name     string
	Dir      string
	Summary  Summary
	HasSum   bool
	Rows     []Row
	Meter    []energy.Sample // the whole meter's series (Worker "")
	Timeline []energy.Interval
	// Derived is set when Timeline was rebuilt from the CSV rows because the
	// folder had no timeline.csv.
	TimelineDerived bool
}

// Load reads a run folder. The results CSV is required; summary.json,
// meter.csv and timeline.csv are read when present.
func Load(dir string) (*Run, error) {
	run := &Run{Name: filepath.Base(filepath.Clean(dir)), Dir: dir}
	f, err := os.Open(filepath.Join(dir, ResultsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w: no %s (give a folder written by mforch experiment)", dir, ErrNotRun, ResultsFile)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if run.Rows, err = ReadResults(f); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ResultsFile), err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, SummaryFile)); err == nil {
		if err := json.Unmarshal(b, &run.Summary); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, SummaryFile), err)
		}
		run.HasSum = true
		if run.Summary.Name != "" {
			run.Name = run.Summary.Name
		}
	}
	if f, err := os.Open(filepath.Join(dir, MeterFile)); err == nil {
		run.Meter, err = ReadMeter(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, MeterFile), err)
		}
	}
	if f, err := os.Open(filepath.Join(dir, TimelineFile)); err == nil {
		run.Timeline, err = ReadTimeline(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, TimelineFile), err)
		}
	}
	if len(run.Timeline) == 0 {
		run.Timeline = timelineFromRows(run.Rows)
		run.TimelineDerived = len(run.Timeline) > 0
	}
	return run, nil
}

// csvTable reads a CSV with a header into column-indexed records. A last
// line cut short by an interrupted write is dropped.
func csvTable(r io.Reader, required ...string) (map[string]int, [][]string, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = false
	head, err := cr.Read()
	if err == io.EOF {
		return nil, nil, fmt.Errorf("empty file: no header")
	}
	if err != nil {
		return nil, nil, err
	}
	col := map[string]int{}
	for i, h := range head {
		col[strings.TrimSpace(h)] = i
	}
	for _, name := range required {
		if _, ok := col[name]; !ok {
			return nil, nil, fmt.Errorf("header has no %q column (have %s)", name, strings.Join(head, ","))
		}
	}
	var recs [][]string
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			// A torn last line (the writer was killed) is not an error.
			if _, err2 := cr.Read(); err2 == io.EOF {
				break
			}
			return nil, nil, err
		}
		if len(rec) != len(head) {
			continue // torn line
		}
		recs = append(recs, rec)
	}
	return col, recs, nil
}

// ReadResults parses a results CSV (orchestrator.CSVHeader, with or
// without the energy columns).
func ReadResults(r io.Reader) ([]Row, error) {
	col, recs, err := csvTable(r, "invocation", "function", "worker", "queued", "finished", "exec_ms", "latency_ms", "error")
	if err != nil {
		return nil, err
	}
	get := func(rec []string, name string) string {
		if i, ok := col[name]; ok && i < len(rec) {
			return rec[i]
		}
		return ""
	}
	_, hasEnergy := col["energy_j"]
	var rows []Row
	for n, rec := range recs {
		line := n + 2
		row := Row{Invocation: get(rec, "invocation"), Function: get(rec, "function"), Worker: get(rec, "worker"),
			Err: get(rec, "error"), EnergySource: get(rec, "energy_source")}
		row.Attempts, _ = strconv.Atoi(get(rec, "attempts"))
		for _, t := range []struct {
			name string
			dst  *time.Time
		}{{"queued", &row.Queued}, {"powered_on", &row.PoweredOn}, {"connected", &row.Connected},
			{"started", &row.Started}, {"finished", &row.Finished}} {
			v := get(rec, t.name)
			if v == "" {
				continue
			}
			ts, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return nil, fmt.Errorf("line %d: %s: %w", line, t.name, err)
			}
			*t.dst = ts
		}
		for _, v := range []struct {
			name string
			dst  *float64
		}{{"boot_connected_ms", &row.BootConnectedMS}, {"exec_ms", &row.ExecMS}, {"latency_ms", &row.LatencyMS}} {
			s := get(rec, v.name)
			if s == "" {
				continue
			}
			x, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: %s: %w", line, v.name, err)
			}
			*v.dst = x
		}
		if hasEnergy {
			if s := get(rec, "energy_j"); s != "" {
				x, err := strconv.ParseFloat(s, 64)
				if err != nil {
					return nil, fmt.Errorf("line %d: energy_j: %w", line, err)
				}
				row.EnergyJ, row.HasEnergy = x, true
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// ReadMeter parses meter.csv (t_unix_ns,watts,source).
func ReadMeter(r io.Reader) ([]energy.Sample, error) {
	col, recs, err := csvTable(r, "t_unix_ns", "watts")
	if err != nil {
		return nil, err
	}
	var out []energy.Sample
	for n, rec := range recs {
		ns, err := strconv.ParseInt(rec[col["t_unix_ns"]], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: t_unix_ns: %w", n+2, err)
		}
		w, err := strconv.ParseFloat(rec[col["watts"]], 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: watts: %w", n+2, err)
		}
		s := energy.Sample{At: time.Unix(0, ns), Watts: w}
		if i, ok := col["source"]; ok {
			s.Source = rec[i]
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out, nil
}

// ReadTimeline parses timeline.csv (worker,state,start_unix_ns,end_unix_ns,invocation).
func ReadTimeline(r io.Reader) ([]energy.Interval, error) {
	col, recs, err := csvTable(r, "worker", "state", "start_unix_ns", "end_unix_ns")
	if err != nil {
		return nil, err
	}
	var out []energy.Interval
	for n, rec := range recs {
		a, err := strconv.ParseInt(rec[col["start_unix_ns"]], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: start_unix_ns: %w", n+2, err)
		}
		b, err := strconv.ParseInt(rec[col["end_unix_ns"]], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: end_unix_ns: %w", n+2, err)
		}
		iv := energy.Interval{Worker: rec[col["worker"]], State: state.Name(rec[col["state"]]), Start: time.Unix(0, a), End: time.Unix(0, b)}
		if i, ok := col["invocation"]; ok {
			iv.Invocation = rec[i]
		}
		out = append(out, iv)
	}
	return out, nil
}

// timelineFromRows rebuilds booting and working intervals from the
// invocations' timestamps, for run folders without timeline.csv.
func timelineFromRows(rows []Row) []energy.Interval {
	var out []energy.Interval
	seen := map[string]bool{} // a warm worker's one boot serves many rows
	for _, r := range rows {
		if r.Worker == "" {
			continue
		}
		key := r.Worker + "@" + r.PoweredOn.String()
		if !r.PoweredOn.IsZero() && r.Connected.After(r.PoweredOn) && !seen[key] {
			seen[key] = true
			out = append(out, energy.Interval{Worker: r.Worker, State: state.Booting, Start: r.PoweredOn, End: r.Connected})
		}
		if !r.Started.IsZero() && r.Finished.After(r.Started) {
			out = append(out, energy.Interval{Worker: r.Worker, State: state.Working, Start: r.Started, End: r.Finished, Invocation: r.Invocation})
		}
	}
	return out
}
