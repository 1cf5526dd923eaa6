package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/httpguard"
	"github.com/microfaas/microfaas/runtime/functions"
)

// SeededCalls spreads n invocations evenly over the functions, in turn,
// each taking the original generator's seeded inputs in turn.
func SeededCalls(names []string, n int, seed int64) ([]Call, error) {
	inputs := functions.GenerateInputs(seed, functions.InputsPerFunction)
	calls := make([]Call, n)
	for i := range calls {
		fn := names[i%len(names)]
		in, ok := inputs[fn]
		if !ok {
			return nil, fmt.Errorf("no generated inputs for %q (known: %v)", fn, functions.CatalogueNames())
		}
		calls[i] = Call{Function: fn, Args: in[(i/len(names))%len(in)]}
	}
	return calls, nil
}

// Arrivals returns the gap before each of n invocations: poisson
// (exponential gaps at rate per second, seeded), uniform (fixed gaps) or
// burst (none). The first invocation starts at once (its gap is 0). It is
// the one arrival generator: mforch loadgen and experiment files both use
// it, so one seed gives one schedule.
func Arrivals(kind string, rate float64, n int, seed int64) ([]time.Duration, error) {
	gaps := make([]time.Duration, n)
	if kind == "burst" {
		return gaps, nil
	}
	if rate <= 0 {
		return nil, fmt.Errorf("--rate must be positive for %s arrivals", kind)
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	for i := range gaps {
		if i == 0 && kind != "uniform" && kind != "poisson" {
			return nil, fmt.Errorf("--arrival %q: want poisson, uniform or burst", kind)
		}
		if i == 0 {
			continue // the first starts at once
		}
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

// HTTPInvoker invokes functions through a running mforch's HTTP API
// (POST /invoke/{function}), each with the given timeout.
func HTTPInvoker(client *http.Client, api httpguard.Endpoint, timeout time.Duration) Invoker {
	return func(ctx context.Context, c Call) Outcome {
		o := Outcome{Call: c}
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
}
