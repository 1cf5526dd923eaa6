package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/microfaas/microfaas/lab/rig"
	"github.com/microfaas/microfaas/lab/tco"
)

const reportUsage = `usage: mforch report RUN [RUN...] [--out report.html] [--tco COSTS.yaml]
       mforch report --tco COSTS.yaml [--out report.html]

Reads run folders written by mforch experiment and writes one
self-contained HTML page (inline SVG, no script, nothing fetched) with
functions per minute over time, latency CDFs per function, the boot / exec
/ wait / overhead split per function, invocations and busy time per worker,
the power trace above the worker states, and joules per invocation
(labelled "model" when the energy is modelled). With two or more runs the
page compares them, with ratios to the first. The summary table goes to
the terminal. docs/experiments.md explains every figure.

With --tco, the page starts with the cost comparison of a board cluster
against a VM host (the DATE'22 paper's energy efficiency and total cost
of ownership, from this file's inputs, each with its source; the paper's
own inputs are not reproduced): invocations per joule, units, capex,
opex and TCO of each platform, and the ratios. A platform's figures come
from a run folder, from a simulation sized to a p99 target (simulate:),
or from per-unit figures (model:). Without RUN the report covers the run
folders the cost file names. examples/tco/ has a file.
`

func runReport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch report", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), reportUsage, "\nflags:\n"); fs.PrintDefaults() }
	out := fs.String("out", "report.html", "where to write the HTML report")
	costs := fs.String("tco", "", "a cost file (examples/tco/): compare energy efficiency and total cost of ownership of its two platforms")
	var dirs []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		dirs = append(dirs, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	section := ""
	var cmp *tco.Result
	if *costs != "" {
		f, err := tco.Load(*costs)
		if err != nil {
			return err
		}
		runs, err := tco.LoadRuns(f)
		if err != nil {
			return err
		}
		if cmp, err = tco.Compute(f, runs); err != nil {
			return fmt.Errorf("%s: %w", *costs, err)
		}
		var b strings.Builder
		if err := cmp.WriteHTML(&b); err != nil {
			return err
		}
		section = b.String()
		if len(dirs) == 0 {
			for _, p := range f.Platforms {
				if p.Run != "" {
					dirs = append(dirs, f.RunPath(p))
				}
			}
		}
	}
	if len(dirs) == 0 && section == "" {
		fs.Usage()
		return fmt.Errorf("give one or more run folders (mforch experiment writes them), or --tco FILE")
	}
	if err := rig.WriteReportWith(dirs, *out, os.Stdout, section); err != nil {
		return err
	}
	if cmp != nil {
		if err := cmp.WriteText(os.Stdout); err != nil {
			return err
		}
	}
	fmt.Printf("\nreport: %s\n", *out)
	return nil
}
