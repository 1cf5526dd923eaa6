package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/microfaas/microfaas/orchestrator/loadgen"
	"github.com/microfaas/microfaas/runtime/functions"
)

func runDemo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch demo", flag.ContinueOnError)
	var c clusterFlags
	c.register(fs)
	n := fs.Int("invocations", 36, "how many invocations to run")
	seed := fs.Uint64("seed", functions.DefaultInputSeed, "seed of the input generator")
	out := fs.String("out", "out/demo", "folder for results.csv and latency.svg")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c.results = filepath.Join(*out, "results.csv")
	os.Remove(c.results) // each demo writes a fresh results file
	r, err := c.start(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	calls := demoCalls(*seed, *n)
	fmt.Printf("running %d invocations on %d QEMU workers (accel %s)...\n", len(calls), c.workers, r.qemu.Accel())
	start := time.Now()
	outs := loadgen.Run(ctx, calls, 0, func(ctx context.Context, call loadgen.Call) loadgen.Outcome {
		t := time.Now()
		inv, err := r.orch.Invoke(ctx, call.Function, call.Args, 0)
		o := loadgen.Outcome{Call: call, Latency: time.Since(t)}
		if err != nil {
			o.Err = err.Error()
			return o
		}
		o.ExecMS, o.BootMS = inv.ExecMS, inv.Boot.ConnectedMS
		if inv.Err != nil {
			o.Err = inv.Err.Error()
		}
		return o
	})
	rows := loadgen.Summarise(outs)
	fmt.Printf("\n%d invocations in %s\n\n", len(outs), time.Since(start).Round(time.Millisecond))
	loadgen.PrintTable(os.Stdout, rows)
	fmt.Println()
	loadgen.PrintBars(os.Stdout, rows)
	svg := filepath.Join(*out, "latency.svg")
	if err := os.WriteFile(svg, []byte(loadgen.SVG(rows)), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nresults: %s\nplot:    %s\nconsoles: %s\n", c.results, svg, r.logDir)
	fmt.Println()
	if err := printEnergy(os.Stdout, r, *out); err != nil {
		return err
	}
	failed := 0
	for _, o := range outs {
		if o.Err != "" {
			failed++
			fmt.Fprintf(os.Stderr, "failed: %s: %s\n", o.Function, firstLine(o.Err))
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d invocations failed", failed, len(outs))
	}
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// demoFunctions are the suite's compute functions: they need no services,
// so the demo runs on a bare machine.
var demoFunctions = []string{
	"cascading_md5", "cascading_sha256", "float_operations", "html_generation", "matmul",
	"pyaes", "regex_match", "regex_search", "zlib_decompress",
}

// demoCalls spreads n invocations evenly over the compute functions, with
// the original experiment's seeded inputs (functions.GenerateInputs).
func demoCalls(seed uint64, n int) []loadgen.Call {
	inputs := functions.GenerateInputs(int64(seed), functions.InputsPerFunction)
	calls := make([]loadgen.Call, n)
	for i := range calls {
		fn := demoFunctions[i%len(demoFunctions)]
		in := inputs[fn]
		calls[i] = loadgen.Call{Function: fn, Args: in[(i/len(demoFunctions))%len(in)]}
	}
	return calls
}
