package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/microfaas/microfaas/lab/profile"
	"github.com/microfaas/microfaas/lab/report"
)

const profileUsage = `usage: mforch profile RUN [--kind vm|bbb] [--name NAME] [--out FILE]

Fits a worker profile for mforch simulate from a recorded run folder
(written by mforch experiment or mforch demo): the boot, reboot and
shutdown time distributions from timeline.csv, each function's execution
time and the job overhead from results.csv, and the per-state power
fitted to meter.csv when the run has one. Writes YAML (docs/experiments.md,
"Simulation").
`

func runProfile(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch profile", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), profileUsage, "\nflags:\n"); fs.PrintDefaults() }
	kind := fs.String("kind", "", "the workers' kind, vm or bbb (default: vm for a run of local QEMU workers; needed for cluster runs)")
	name := fs.String("name", "", "the profile's name (default: the run's)")
	out := fs.String("out", "", "file to write (default: standard output)")
	dir, err := parseWithArg(fs, args, "give a run folder (mforch experiment writes them)")
	if err != nil {
		return err
	}
	run, err := report.Load(dir)
	if err != nil {
		return err
	}
	p, err := profile.Fit(run, *kind)
	if err != nil {
		return err
	}
	if *name != "" {
		p.Name = *name
	}
	b, err := p.Marshal("mforch profile " + dir + "\n" + strings.Join(p.Notes, "\n"))
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = os.Stdout.Write(b)
		return err
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "profile %s: boot mean %.3f s, shutdown mean %.3f s, %d functions; written to %s\n",
		p.Name, p.Boot.MeanOf(), p.Shutdown.MeanOf(), len(p.Exec)-1, *out)
	return nil
}

// parseWithArg parses flags before and after one positional argument.
func parseWithArg(fs *flag.FlagSet, args []string, missing string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return "", fmt.Errorf("%s", missing)
	}
	arg := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("one at a time (extra: %s)", strings.Join(fs.Args(), " "))
	}
	return arg, nil
}
