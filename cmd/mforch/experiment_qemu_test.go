package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/lab/report"
	"github.com/microfaas/microfaas/lab/rig"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/target"
)

// TestExperimentRecordsEnergy runs a small experiment on one QEMU worker
// with the CPU-time model, through the same path as mforch experiment and
// demo: the orchestrator itself writes every results row with its energy
// (no rewrite afterwards), energy.txt holds the run's account, meter.csv
// the samples, and the report reads the folder back.
func TestExperimentRecordsEnergy(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a QEMU worker")
	}
	repo, err := builder.FindRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w, err := builder.BuildWorker(context.Background(),
		builder.Options{RepoDir: repo, Arch: target.X86, Cache: cache.Cache{Dir: cache.DefaultDir()}}, filepath.Join(dir, "x86"))
	if err != nil {
		t.Fatal(err)
	}
	raw := fmt.Sprintf(`name: energy-path
workers: {qemu: 1, kernel: %q, initrd: %q, accel: tcg}
functions: [cascading_sha256]
invocations: 3
arrival: {process: closed-loop}
seed: 1
mode: power-cycled
services: none
meter: {driver: cpu-time, interval: 500ms, model: {idle_watts: 20, watts_per_core: 10}}
`, w.Kernel, w.Initramfs)
	spec, err := experiment.Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sum, err := rig.RunExperiment(ctx, rig.TerminalExperiment(spec, []byte(raw), run, false))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Done != 3 || sum.Failed != 0 {
		t.Fatalf("summary: %d done, %d failed; want 3, 0", sum.Done, sum.Failed)
	}
	f, err := os.Open(filepath.Join(run, report.ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil || len(rows) != 4 {
		t.Fatalf("results.csv: %d lines (%v), want a header and 3 rows", len(rows), err)
	}
	col := slices.Index(rows[0], "energy_j")
	src := slices.Index(rows[0], "energy_source")
	if col < 0 || src < 0 {
		t.Fatalf("results.csv header %v has no energy columns", rows[0])
	}
	for _, r := range rows[1:] {
		j, err := strconv.ParseFloat(r[col], 64)
		if err != nil || j <= 0 || !energy.IsModel(r[src]) {
			t.Errorf("row %s: energy_j %q source %q; want a positive modelled energy", r[0], r[col], r[src])
		}
	}
	if b, err := os.ReadFile(filepath.Join(run, "energy.txt")); err != nil || len(b) == 0 {
		t.Errorf("energy.txt: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(run, report.MeterFile)); err != nil || len(b) < 40 {
		t.Errorf("meter.csv: %q, %v; want samples", b, err)
	}
	if err := rig.WriteReport([]string{run}, filepath.Join(dir, "report.html"), os.Stderr); err != nil {
		t.Errorf("report: %v", err)
	}
}
