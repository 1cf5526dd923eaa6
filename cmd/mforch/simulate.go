package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/lab/profile"
	"github.com/microfaas/microfaas/lab/report"
	"github.com/microfaas/microfaas/lab/rig"
	"github.com/microfaas/microfaas/lab/sim"
)

const simulateUsage = `usage: mforch simulate FILE|RUN --profile PROFILE [--workers N] [--policy P] [--trace CSV] [--out DIR]

Runs an experiment file (or a run folder's experiment.yaml) as a
simulation: the orchestrator's own scheduler, driven event by event on a
simulated clock, with workers whose boot, reboot, shutdown and execution
times and per-state power are drawn from PROFILE (mforch profile fits one
to a recorded run; examples/profiles/ has a BeagleBone Black profile from
published figures). Arrivals are the file's (poisson, uniform, closed
loop), or --trace's calls. Writes a run folder that mforch report reads
like a measured one, marked simulated (summary.json "simulated"), then
RUN/report.html and the summary table. Nothing boots.
`

func runSimulate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch simulate", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), simulateUsage, "\nflags:\n"); fs.PrintDefaults() }
	profPath := fs.String("profile", "", "the workers' profile (YAML; required)")
	workers := fs.Int("workers", 0, "workers to simulate (default: the file's workers: qemu: N, or its cluster file's workers)")
	tracePath := fs.String("trace", "", "replay this CSV (timestamp,function) instead of the file's arrivals and functions")
	out := fs.String("out", "", "run folder to create (default: runs/NAME-sim-YYYYMMDD-HHMMSS)")
	seed := fs.Int64("seed", 0, "seed for arrivals and draws (default: the file's)")
	drawSeed := fs.Int64("draw-seed", 0, "seed for the profile's draws only, keeping the arrivals (default: --seed)")
	interval := fs.Duration("meter-interval", time.Second, "the simulated meter's sample period")
	var policy cluster.Policy
	policyFlag(fs, &policy)
	file, err := parseWithArg(fs, args, "give an experiment file or a run folder (examples/experiments/ has files)")
	if err != nil {
		return err
	}
	if fi, err := os.Stat(file); err == nil && fi.IsDir() {
		file = filepath.Join(file, report.ExperimentFile)
	}
	if *profPath == "" {
		return fmt.Errorf("give --profile (mforch profile RUN --out p.yaml fits one; examples/profiles/ has one)")
	}
	spec, raw, err := experiment.Load(file)
	if err != nil {
		return err
	}
	if *seed != 0 {
		spec.Seed = *seed
	}
	prof, err := profile.Load(*profPath)
	if err != nil {
		return err
	}
	profRaw, err := os.ReadFile(*profPath)
	if err != nil {
		return err
	}
	// Without --workers or --policy, a cluster file gives the count and
	// its policy for the profile's kind.
	n := *workers
	if n <= 0 {
		n = spec.Workers.QEMU
	}
	if spec.Workers.Cluster != "" && (n <= 0 || policy.Name == "") {
		c, err := cluster.Load(spec.Workers.Cluster)
		if err != nil {
			return fmt.Errorf("%w (or give --workers N and --policy)", err)
		}
		if n <= 0 {
			n = len(c.Workers)
		}
		if policy.Name == "" {
			policy = c.Policy(prof.Kind)
		}
	}
	cfg := sim.Config{Spec: spec, File: raw, Profile: prof, ProfileFile: profRaw, Workers: n, Policy: policy,
		MeterInterval: *interval, DrawSeed: *drawSeed}
	if *tracePath != "" {
		f, err := os.Open(*tracePath)
		if err != nil {
			return err
		}
		cfg.Trace, err = sim.ReadTrace(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", *tracePath, err)
		}
		cfg.TraceName = filepath.Base(*tracePath)
	}
	cfg.Dir = *out
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join("runs", spec.Name+"-sim-"+time.Now().Format("20060102-150405"))
	}
	res, err := sim.Run(cfg)
	if err != nil {
		return err
	}
	fmt.Printf("simulated %s of %d %s workers (profile %s, policy %s): %d events in %.2f s\n",
		time.Duration(res.Summary.Simulated.SimulatedSeconds*float64(time.Second)).Round(time.Second), n, prof.Kind,
		prof.Name, policy.String(), res.Events, res.Wall.Seconds())
	page := filepath.Join(cfg.Dir, "report.html")
	if err := rig.WriteReport([]string{cfg.Dir}, page, os.Stdout); err != nil {
		return err
	}
	fmt.Printf("\nrun folder: %s\nreport:     %s\n", cfg.Dir, page)
	return nil
}
