package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/microfaas/microfaas/lab/loadgen"
	"github.com/microfaas/microfaas/orchestrator"
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
	inputs := functions.GenerateInputs(*seed, functions.InputsPerFunction)
	calls := make([]loadgen.Call, *n)
	for i := range calls {
		fn := names[i%len(names)]
		in, ok := inputs[fn]
		if !ok {
			return fmt.Errorf("no generated inputs for %q (known: %v)", fn, functions.CatalogueNames())
		}
		calls[i] = loadgen.Call{Function: fn, Args: in[(i/len(names))%len(in)]}
	}
	gaps, err := arrivals(*arrival, *rate, *n, *seed)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: *timeout + 30*time.Second}
	fmt.Printf("loadgen: %d invocations of %d functions, %s arrivals at %.2f/s, against %s\n", *n, len(names), *arrival, *rate, api)
	start := time.Now()
	outs := loadgen.RunPaced(ctx, calls, gaps, func(ctx context.Context, c loadgen.Call) loadgen.Outcome {
		return invokeHTTP(ctx, client, api, *timeout, c)
	})
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

// arrivals returns the gap before each invocation.
func arrivals(kind string, rate float64, n int, seed int64) ([]time.Duration, error) {
	gaps := make([]time.Duration, n)
	if kind == "burst" {
		return gaps, nil
	}
	if rate <= 0 {
		return nil, fmt.Errorf("--rate must be positive for %s arrivals", kind)
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	for i := range gaps {
		switch kind {
		case "uniform":
			gaps[i] = time.Duration(float64(time.Second) / rate)
		case "poisson":
			gaps[i] = time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
		default:
			return nil, fmt.Errorf("--arrival %q: want poisson, uniform or burst", kind)
		}
	}
	return gaps, nil
}

func invokeHTTP(ctx context.Context, client *http.Client, api httpguard.Endpoint, timeout time.Duration, c loadgen.Call) loadgen.Outcome {
	o := loadgen.Outcome{Call: c}
	start := time.Now()
	url := fmt.Sprintf("%s/invoke/%s?timeout=%s", api, c.Function, timeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(c.Args))
	if err != nil {
		o.Err = err.Error()
		return o
	}
	api.Authorize(req)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	o.Latency = time.Since(start)
	if err != nil {
		o.Err = err.Error()
		return o
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r orchestrator.InvokeResponse
	if err := json.Unmarshal(body, &r); err != nil {
		o.Err = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		return o
	}
	o.Err, o.ExecMS, o.BootMS = r.Error, r.ExecMS, r.BootMS
	return o
}
