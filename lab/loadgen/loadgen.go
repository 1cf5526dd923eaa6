// Package loadgen drives a MicroFaaS cluster with a seeded mix of the
// workload suite and summarises what came back: per function, the count,
// failures, latency percentiles and worker boot times.
package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"sync"
	"text/tabwriter"
	"time"
)

// Call is one invocation to make.
type Call struct {
	Function string
	Args     json.RawMessage
}

// Outcome is what one call returned.
type Outcome struct {
	Call
	Latency time.Duration // submit to result
	BootMS  float64       // guest uptime at connect, 0 if the worker was already up
	ExecMS  float64
	Err     string
}

// Invoker runs one call and reports its outcome.
type Invoker func(ctx context.Context, c Call) Outcome

// Run makes every call, at most concurrency at once, and returns the
// outcomes in call order.
func Run(ctx context.Context, calls []Call, concurrency int, inv Invoker) []Outcome {
	if concurrency <= 0 {
		concurrency = len(calls)
	}
	out := make([]Outcome, len(calls))
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for i, c := range calls {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = inv(ctx, c)
		}()
	}
	wg.Wait()
	return out
}

// Row summarises one function's outcomes.
type Row struct {
	Function  string
	Count     int
	Failed    int
	P50, P95  time.Duration
	P99       time.Duration
	BootP50MS float64
	ExecP50MS float64
}

// Summarise groups outcomes by function, sorted by name, with a final "all" row.
func Summarise(outs []Outcome) []Row {
	by := map[string][]Outcome{}
	for _, o := range outs {
		by[o.Function] = append(by[o.Function], o)
	}
	names := make([]string, 0, len(by))
	for n := range by {
		names = append(names, n)
	}
	sort.Strings(names)
	var rows []Row
	for _, n := range names {
		rows = append(rows, summarise(n, by[n]))
	}
	if len(names) > 1 {
		rows = append(rows, summarise("all", outs))
	}
	return rows
}

func summarise(name string, outs []Outcome) Row {
	r := Row{Function: name, Count: len(outs)}
	var lat []time.Duration
	var boot, exec []float64
	for _, o := range outs {
		if o.Err != "" {
			r.Failed++
			continue
		}
		lat = append(lat, o.Latency)
		exec = append(exec, o.ExecMS)
		if o.BootMS > 0 {
			boot = append(boot, o.BootMS)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r.P50, r.P95, r.P99 = pct(lat, 50), pct(lat, 95), pct(lat, 99)
	r.BootP50MS = pctF(boot, 50)
	r.ExecP50MS = pctF(exec, 50)
	return r
}

// pct is the nearest-rank percentile of sorted durations.
func pct(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func pctF(s []float64, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	c := append([]float64(nil), s...)
	sort.Float64s(c)
	i := int(math.Ceil(p/100*float64(len(c)))) - 1
	return c[max(0, min(i, len(c)-1))]
}

// PrintTable writes rows as an aligned table.
func PrintTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "function\tcount\tfailed\tp50 ms\tp95 ms\tp99 ms\texec p50 ms\tboot p50 ms\t")
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d.Microseconds())/1000) }
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%.1f\t%.0f\t\n", r.Function, r.Count, r.Failed,
			ms(r.P50), ms(r.P95), ms(r.P99), r.ExecP50MS, r.BootP50MS)
	}
	tw.Flush()
}

// RunPaced starts call i after waiting gaps[i] from the start of call i-1
// (an open-loop arrival process: calls do not wait for earlier results).
func RunPaced(ctx context.Context, calls []Call, gaps []time.Duration, inv Invoker) []Outcome {
	out := make([]Outcome, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		if i < len(gaps) && gaps[i] > 0 {
			select {
			case <-time.After(gaps[i]):
			case <-ctx.Done():
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = inv(ctx, c)
		}()
	}
	wg.Wait()
	return out
}
