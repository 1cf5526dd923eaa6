// Command policy-study compares the power policies on a simulated rack of
// BeagleBone boards under one day of bursty load (docs/experiments.md,
// "The policy study"): for each policy, the median and 99th-percentile
// latency and the joules per invocation with -boards boards, and the fewest
// boards that keep p99 under -target. Run it from the repository root:
//
//	go run ./examples/policy-study [-boards 100] [-target 8s] [-out runs/policy-study]
//
// It writes OUT/trace.csv (the day's calls, for mforch simulate --trace)
// and OUT/study.md (the table), and with -folders a run folder per policy
// that mforch report compares.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/lab/profile"
	"github.com/microfaas/microfaas/lab/sim"
)

func main() {
	boards := flag.Int("boards", 100, "boards in the rack")
	target := flag.Duration("target", 8*time.Second, "the p99 latency target")
	mean := flag.Float64("rate", 2, "the day's mean calls per second, without bursts")
	profPath := flag.String("profile", "examples/profiles/bbb-srm.yaml", "the boards' profile")
	policies := flag.String("policies", "off,reboot-while-queued,warm-pool=5,warm-pool=20", "policies to compare, comma-separated")
	seed := flag.Int64("seed", 63302, "seeds the trace and the draws")
	out := flag.String("out", "runs/policy-study", "folder for trace.csv, study.md and the run folders")
	folders := flag.Bool("folders", false, "write a run folder per policy at -boards (large: ~100 MB each)")
	flag.Parse()
	if err := run(*boards, *target, *mean, *profPath, *policies, *seed, *out, *folders); err != nil {
		fmt.Fprintln(os.Stderr, "policy-study:", err)
		os.Exit(1)
	}
}

func run(boards int, target time.Duration, mean float64, profPath, policies string, seed int64, out string, folders bool) error {
	prof, err := profile.Load(profPath)
	if err != nil {
		return err
	}
	profRaw, _ := os.ReadFile(profPath)
	functions := []string{"float_operations", "matmul", "cascading_sha256", "regex_match", "html_generation"}
	trace, err := sim.Bursty{Mean: mean, Functions: functions, Seed: seed}.Trace()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(out, "trace.csv"))
	if err != nil {
		return err
	}
	if err := sim.WriteTrace(f, trace); err != nil {
		f.Close()
		return err
	}
	f.Close()
	spec := &experiment.Spec{Name: "policy-study", Functions: functions, Invocations: len(trace),
		Arrival: experiment.ArrivalSpec{Process: experiment.Poisson, Rate: mean}, Seed: seed,
		Mode: experiment.PowerCycled, Timeout: experiment.Duration(120 * time.Second)}
	simulate := func(p cluster.Policy, n int, dir string) (*sim.Result, error) {
		return sim.Run(sim.Config{Spec: spec, File: []byte("# policy-study: see trace.csv\n"), Profile: prof, ProfileFile: profRaw,
			Workers: n, Policy: p, Trace: trace, TraceName: "trace.csv", Dir: dir})
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# Policy study\n\n%d %s boards (profile %s), one day of bursty load: %d calls (mean %g/s, daily swing 0.6, bursts of 5× for 60 s every 20 min on average), seed %d, p99 target %s.\n\n",
		boards, prof.Kind, prof.Name, len(trace), mean, seed, target)
	fmt.Fprintf(&md, "| policy | p50 ms | p99 ms | J per invocation | failed (refused: queue full) | boards for p99 ≤ %s, none failed | simulated in |\n| --- | --- | --- | --- | --- | --- | --- |\n", target)
	fmt.Fprintf(os.Stderr, "%d calls; simulating %s\n", len(trace), policies)
	for _, name := range strings.Split(policies, ",") {
		p, err := cluster.ParsePolicy(strings.TrimSpace(name))
		if err != nil {
			return err
		}
		dir := ""
		if folders {
			dir = filepath.Join(out, p.String())
		}
		res, err := simulate(p, boards, dir)
		if err != nil {
			return err
		}
		need, err := boardsFor(func(n int) (bool, error) {
			r, err := simulate(p, n, "")
			if err != nil {
				return false, err
			}
			return r.P99 <= float64(target.Milliseconds()) && r.Summary.Failed == 0, nil
		}, 4*boards)
		if err != nil {
			return err
		}
		needText := fmt.Sprint(need)
		if need < 0 {
			needText = fmt.Sprintf("more than %d", 4*boards)
		}
		fmt.Fprintf(&md, "| %s | %.0f | %.0f | %.2f | %d (%d) | %s | %.1f s |\n", p, res.P50, res.P99, res.JPerInv,
			res.Summary.Failed, res.Refused, needText, res.Wall.Seconds())
		fmt.Fprintf(os.Stderr, "%s: p50 %.0f ms, p99 %.0f ms, %.2f J/inv; %s boards for p99 <= %s\n", p, res.P50, res.P99, res.JPerInv, needText, target)
	}
	fmt.Fprintf(&md, "\nLatencies are of the successful calls; a refused call (the queue held 1000) counts as failed. ")
	fmt.Fprintf(&md, "Joules per invocation are the profile's power model (the meter of the whole rack, baseline included) over the day, per successful invocation.\n")
	if err := os.WriteFile(filepath.Join(out, "study.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	_, err = io.WriteString(os.Stdout, md.String())
	return err
}

// boardsFor is the fewest boards (to 1 in 20) for which ok holds (p99 under
// the target and no call failed), by bisection between 1 and max boards
// (the latency falls as boards are added); -1 if max is not enough.
func boardsFor(ok func(int) (bool, error), max int) (int, error) {
	if good, err := ok(max); err != nil || !good {
		return -1, err
	}
	lo, hi := 0, max // ok(hi); not ok(lo), or lo = 0
	for hi-lo > 1 && hi-lo > hi/20 {
		mid := (lo + hi) / 2
		good, err := ok(mid)
		if err != nil {
			return 0, err
		}
		if good {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, nil
}
