package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/microfaas/microfaas/lab/rig"
)

const reportUsage = `usage: mforch report RUN [RUN...] [--out report.html]

Reads run folders written by mforch experiment and writes one
self-contained HTML page (inline SVG, no script, nothing fetched) with
functions per minute over time, latency CDFs per function, the boot / exec
/ wait / overhead split per function, invocations and busy time per worker,
the power trace above the worker states, and joules per invocation
(labelled "model" when the energy is modelled). With two or more runs the
page compares them, with ratios to the first. The summary table goes to
the terminal. docs/experiments.md explains every figure.
`

func runReport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch report", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), reportUsage, "\nflags:\n"); fs.PrintDefaults() }
	out := fs.String("out", "report.html", "where to write the HTML report")
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
	if len(dirs) == 0 {
		fs.Usage()
		return fmt.Errorf("give one or more run folders (mforch experiment writes them)")
	}
	if err := rig.WriteReport(dirs, *out, os.Stdout); err != nil {
		return err
	}
	fmt.Printf("\nreport: %s\n", *out)
	return nil
}
