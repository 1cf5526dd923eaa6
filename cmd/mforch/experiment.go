package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/lab/rig"
)

const experimentUsage = `usage: mforch experiment FILE [--out DIR] [-v]

Runs the experiment FILE describes (docs/experiments.md: workers, function
mix, invocations, arrival process, seed, worker mode, meter), starting the
services the mix needs, and records one run folder: the experiment file,
results.csv, timeline.csv, meter.csv, build manifests, host facts and
summary.json; then writes RUN/report.html and prints the summary table.
Ctrl-C stops submitting, lets running invocations finish and leaves a
readable folder marked interrupted.
`

func runExperiment(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch experiment", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), experimentUsage, "\nflags:\n"); fs.PrintDefaults() }
	out := fs.String("out", "", "run folder to create (default: runs/NAME-YYYYMMDD-HHMMSS)")
	verbose := fs.Bool("v", false, "verbose orchestrator logs")
	var policy cluster.Policy
	policyFlag(fs, &policy)
	file, err := parseWithFile(fs, args)
	if err != nil {
		return err
	}
	spec, raw, err := experiment.Load(file)
	if err != nil {
		return err
	}
	dir := *out
	if dir == "" {
		dir = filepath.Join("runs", spec.Name+"-"+time.Now().Format("20060102-150405"))
	}
	e := rig.TerminalExperiment(spec, raw, dir, *verbose)
	e.Policy = policy
	sum, err := rig.RunExperiment(ctx, e)
	if err != nil {
		return err
	}
	page := filepath.Join(dir, "report.html")
	if err := rig.WriteReport([]string{dir}, page, os.Stdout); err != nil {
		return err
	}
	fmt.Printf("\nrun folder: %s\nreport:     %s\n", dir, page)
	if sum.Interrupted {
		return fmt.Errorf("interrupted after %d of %d invocations; the run folder is readable", sum.Done, sum.Planned)
	}
	if sum.Failed > 0 {
		return fmt.Errorf("%d of %d invocations failed (results.csv has their errors)", sum.Failed, sum.Done)
	}
	return nil
}

// parseWithFile parses flags before and after one positional FILE.
func parseWithFile(fs *flag.FlagSet, args []string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return "", fmt.Errorf("give an experiment file (examples/experiments/ has some)")
	}
	file := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("one experiment file at a time (extra: %s)", strings.Join(fs.Args(), " "))
	}
	return file, nil
}
