package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/microfaas/microfaas/lab/report"
)

// mforch profile fits the recorded test run; mforch simulate replays that
// run's own experiment file (given as its run folder) on the profile and
// writes a folder the report reads, marked simulated.
func TestProfileThenSimulate(t *testing.T) {
	rec := "../../lab/profile/testdata/demo-2w"
	dir := t.TempDir()
	prof := filepath.Join(dir, "p.yaml")
	if err := runProfile(context.Background(), []string{rec, "--out", prof}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "sim")
	if err := runSimulate(context.Background(), []string{rec, "--profile", prof, "--out", out}); err != nil {
		t.Fatal(err)
	}
	r, err := report.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	s := r.Summary
	if s.Simulated == nil || s.Simulated.Profile != "demo" || s.Done != 9 || s.Workers != 2 || len(r.Rows) != 9 || len(r.Meter) < 2 {
		t.Errorf("summary %+v, %d rows, %d meter samples", s, len(r.Rows), len(r.Meter))
	}
	if err := runSimulate(context.Background(), []string{rec, "--out", filepath.Join(dir, "x")}); err == nil {
		t.Error("no --profile: want an error")
	}
}
