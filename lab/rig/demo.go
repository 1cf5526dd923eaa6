package rig

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/microfaas/microfaas/internal/progress"
	"github.com/microfaas/microfaas/internal/statedir"
	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/runtime/functions"
)

// Demo is mforch demo: a small experiment on local QEMU workers, from
// flags instead of a file.
type Demo struct {
	Workers, Invocations        int
	Kernel, Initrd, Accel, Boot string
	Seed                        int64
	AllFunctions                bool // the whole suite, with the services it needs
}

// File is the demo's experiment file, written into the run folder like
// any other.
func (d Demo) File() []byte {
	// Compute functions need no services: the demo runs on a bare machine.
	fns, services := functions.CatalogueNames(functions.KindCompute), "none"
	if d.AllFunctions {
		fns, services = functions.CatalogueNames(), "auto"
	}
	return fmt.Appendf(nil, `# mforch demo: %d invocations on %d local QEMU workers, one caller per worker
name: demo
workers: {qemu: %d, kernel: %q, initrd: %q, accel: %s, boot: %s}
functions: [%s]
invocations: %d
arrival: {process: closed-loop}
seed: %d
mode: power-cycled
services: %s
# power from the CPU-time model of the QEMU processes, with docs/energy.md's
# uncalibrated example parameters: every figure of it says "model"
meter: {driver: cpu-time, interval: 1s, model: {idle_watts: 45, watts_per_core: 9.5}}
`, d.Invocations, d.Workers, d.Workers, d.Kernel, d.Initrd, d.Accel, d.Boot, strings.Join(fns, ", "), d.Invocations, d.Seed, services)
}

// TerminalExperiment is spec (read from the file raw) recorded into dir
// for a command run in a terminal: notes and logs on stderr, warnings
// only unless verbose (a progress line is showing there when stderr is a
// terminal).
func TerminalExperiment(spec *experiment.Spec, raw []byte, dir string, verbose bool) Experiment {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	e := Experiment{Spec: spec, File: raw, Dir: dir, Notes: os.Stderr,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))}
	if progress.IsTerminal(os.Stderr) {
		e.Progress = os.Stderr
	}
	return e
}

// StateDefaults puts the results CSV and the console logs, where c names
// none, in the state folder (internal/statedir), creating it.
func (c *Config) StateDefaults() error {
	if c.Results != "" && c.ConsoleDir != "" {
		return nil
	}
	state, err := statedir.Dir()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	if c.Results == "" {
		c.Results = filepath.Join(state, "results.csv")
	}
	if c.ConsoleDir == "" {
		c.ConsoleDir = filepath.Join(state, "consoles")
	}
	return nil
}
