package rig

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/microfaas/microfaas/lab/experiment"
)

// TestExperimentBadInputsLeaveNothing: a missing kernel is told before any
// service starts, and no run folder is left to block the same --out.
func TestExperimentBadInputsLeaveNothing(t *testing.T) {
	dir := t.TempDir()
	file := []byte("workers: {qemu: 1, kernel: nope/bzImage, initrd: nope/initrd}\ninvocations: 1\nfunctions: [redis_insert]\narrival: {process: closed-loop}\n")
	spec, err := experiment.Parse(file)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "run")
	var notes bytes.Buffer
	_, err = RunExperiment(context.Background(), Experiment{Spec: spec, File: file, Dir: out, Notes: &notes})
	if !errors.Is(err, experiment.ErrSpec) {
		t.Fatalf("RunExperiment with no kernel: %v, want ErrSpec", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("run folder %s exists after a refused run (%v): it would block the same --out", out, err)
	}
	if notes.Len() != 0 {
		t.Errorf("something started before the inputs were checked: %q", notes.String())
	}
}
