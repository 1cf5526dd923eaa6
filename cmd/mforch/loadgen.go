package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/microfaas/microfaas/lab/loadgen"
	"github.com/microfaas/microfaas/orchestrator/httpguard"
	"github.com/microfaas/microfaas/runtime/functions"
)

func runLoadgen(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch loadgen", flag.ContinueOnError)
	addr := fs.String("addr", "http://127.0.0.1:8080", "a running mforch's HTTP API")
	n := fs.Int("n", 170, "invocations in all, spread evenly over the functions (the original experiment made 17000)")
	fnList := fs.String("functions", strings.Join(functions.CatalogueNames(functions.KindCompute), ","), "comma-separated functions to call (service functions need the cluster file's services)")
	seed := fs.Int64("seed", functions.DefaultInputSeed, "seed of the inputs and of the arrival process")
	arrival := fs.String("arrival", "poisson", "arrival process: poisson (exponential gaps at --rate), uniform (fixed gaps at --rate) or burst (all at once)")
	rate := fs.Float64("rate", 2, "invocations per second for poisson and uniform arrivals")
	timeout := fs.Duration("timeout", 2*time.Minute, "per-invocation timeout")
	authDir := fs.String("auth", "", "mforch serve's credentials folder (default: the one mforch serve uses by default);\n"+
		"credentials in --addr (http://admin:PASSWORD@host:port) win")
	if err := fs.Parse(args); err != nil {
		return err
	}
	api, err := httpguard.NewEndpoint(*addr, *authDir)
	if err != nil {
		return err
	}
	names := strings.Split(*fnList, ",")
	calls, err := loadgen.SeededCalls(names, *n, *seed)
	if err != nil {
		return err
	}
	gaps, err := loadgen.Arrivals(*arrival, *rate, *n, *seed)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: *timeout + 30*time.Second}
	fmt.Printf("loadgen: %d invocations of %d functions, %s arrivals at %.2f/s, against %s\n", *n, len(names), *arrival, *rate, api)
	start := time.Now()
	outs := loadgen.RunPaced(ctx, calls, gaps, loadgen.HTTPInvoker(client, api, *timeout))
	fmt.Printf("\n%d invocations in %s\n\n", len(outs), time.Since(start).Round(time.Millisecond))
	loadgen.PrintTable(os.Stdout, loadgen.Summarise(outs))
	failed := 0
	for _, o := range outs {
		if o.Err != "" {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d invocations failed", failed, len(outs))
	}
	return nil
}
