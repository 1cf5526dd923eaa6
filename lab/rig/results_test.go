package rig

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator"
)

func TestOpenResults(t *testing.T) {
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	header := strings.Join(orchestrator.CSVHeader, ",") + "\n"
	for _, tc := range []struct {
		name, before string
		wantHeader   bool
		wantKept     bool
	}{
		{"new file", "", true, false},
		{"same schema", header + "row\n", false, false},
		{"older schema", "id,function,worker\nrow\n", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "results.csv")
			if tc.before != "" {
				os.WriteFile(path, []byte(tc.before), 0o644)
			}
			f, needHeader, err := openResults(path, orchestrator.CSVHeader, now, slog.Default())
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			if needHeader != tc.wantHeader {
				t.Errorf("needHeader = %v, want %v", needHeader, tc.wantHeader)
			}
			kept := filepath.Join(dir, "results.old-20261130T100000.csv")
			b, err := os.ReadFile(kept)
			if tc.wantKept && (err != nil || string(b) != tc.before) {
				t.Errorf("the old file was not kept intact at %s: %v %q", kept, err, b)
			}
			if !tc.wantKept && err == nil {
				t.Errorf("a file of the same schema was moved aside")
			}
		})
	}
}

func TestOpenResultsEnergyColumns(t *testing.T) {
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	path := filepath.Join(dir, "results.csv")
	log := slog.New(slog.DiscardHandler)
	// A run without energy, then one with: the first file is kept aside.
	f, header, err := openResults(path, orchestrator.CSVHeader, now, log)
	if err != nil || !header {
		t.Fatalf("new file: header %v, %v", header, err)
	}
	if _, err := orchestrator.NewCSVRecorder(f, true); err != nil {
		t.Fatal(err)
	}
	f.Close()
	f, header, err = openResults(path, orchestrator.EnergyCSVHeader, now, log)
	if err != nil || !header {
		t.Fatalf("energy columns after a file without: header %v, %v; want a new file", header, err)
	}
	if _, err := orchestrator.NewEnergyCSVRecorder(f, true); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := os.Stat(filepath.Join(dir, "results.old-20261130T100000.csv")); err != nil {
		t.Errorf("the file without energy columns was not kept: %v", err)
	}
	// The same columns again: appended.
	f, header, err = openResults(path, orchestrator.EnergyCSVHeader, now.Add(time.Hour), log)
	if err != nil || header {
		t.Fatalf("same columns: header %v, %v; want to append", header, err)
	}
	f.Close()
}
