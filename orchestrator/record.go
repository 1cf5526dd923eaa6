package orchestrator

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/microfaas/microfaas/orchestrator/energy"
)

// Recorder receives every finished invocation once its timeline is
// complete: when the worker that ran it powered off after it, or at once
// when the worker stays up for more work (PoweredOff zero). It is called
// from the orchestrator's loop and must not block for long.
type Recorder interface {
	Record(inv *Invocation)
}

// CSVHeader is the results file's schema (docs/orchestrator.md explains it).
var CSVHeader = []string{
	"invocation", "function", "worker", "attempts", "queued", "powered_on", "connected", "started", "finished", "powered_off",
	"boot_init_ms", "boot_network_ms", "boot_connected_ms", "exec_ms", "latency_ms", "result_bytes", "timed_out", "error",
}

// CSVRecorder writes one row per invocation.
type CSVRecorder struct {
	mu     sync.Mutex
	w      *csv.Writer
	energy bool // energy.CSVColumns after CSVHeader
}

// NewCSVRecorder returns a recorder writing to w, after the header if
// header is set (a new file; an appended one has it already).
func NewCSVRecorder(w io.Writer, header bool) (*CSVRecorder, error) {
	cw := csv.NewWriter(w)
	if header {
		if err := cw.Write(CSVHeader); err != nil {
			return nil, fmt.Errorf("results csv: %w", err)
		}
		cw.Flush()
	}
	return &CSVRecorder{w: cw}, cw.Error()
}

// EnergyCSVHeader is the results file's schema with a meter: CSVHeader,
// then energy.CSVColumns (energy_j, ..., energy_source; docs/energy.md).
var EnergyCSVHeader = append(append([]string(nil), CSVHeader...), energy.CSVColumns...)

// NewEnergyCSVRecorder is NewCSVRecorder with the energy columns: each
// row carries its invocation's final energy (empty if none is known).
func NewEnergyCSVRecorder(w io.Writer, header bool) (*CSVRecorder, error) {
	cw := csv.NewWriter(w)
	if header {
		if err := cw.Write(EnergyCSVHeader); err != nil {
			return nil, fmt.Errorf("results csv: %w", err)
		}
		cw.Flush()
	}
	return &CSVRecorder{w: cw, energy: true}, cw.Error()
}

// Record writes inv's row and flushes it, so a crash loses nothing written.
func (r *CSVRecorder) Record(inv *Invocation) {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	r.mu.Lock()
	defer r.mu.Unlock()
	row := []string{
		inv.ID, inv.Function, inv.Worker, strconv.Itoa(inv.Attempts),
		ts(inv.Queued), ts(inv.PoweredOn), ts(inv.Connected), ts(inv.Started), ts(inv.Finished), ts(inv.PoweredOff),
		f(inv.Boot.InitMS), f(inv.Boot.NetworkMS), f(inv.Boot.ConnectedMS), f(inv.ExecMS),
		f(float64(inv.Finished.Sub(inv.Queued).Microseconds()) / 1000),
		strconv.Itoa(len(inv.Result)), strconv.FormatBool(inv.TimedOut), ErrText(inv.Err),
	}
	if r.energy {
		// Set before the energy book hands the row over.
		row = append(row, inv.energy.csvFields()...)
	}
	r.w.Write(row)
	r.w.Flush()
}

// MultiRecorder fans out to several recorders.
type MultiRecorder []Recorder

// Record calls every recorder.
func (m MultiRecorder) Record(inv *Invocation) {
	for _, r := range m {
		r.Record(inv)
	}
}
