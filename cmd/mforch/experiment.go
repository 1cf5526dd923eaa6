package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/progress"
	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/lab/report"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/meters"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/runtime/functions"
)

const experimentUsage = `usage: mforch experiment FILE [--out DIR] [-v]

Runs the experiment FILE describes (docs/experiments.md: workers, function
mix, invocations, arrival process, seed, worker mode, meter), starting the
services the mix needs, and records one run folder: the experiment file,
results.csv, timeline.csv, meter.csv, build manifests, host facts and
summary.json; then writes RUN/report.html and prints the summary table.
Ctrl-C stops submitting, lets running invocations finish and leaves a
readable folder marked interrupted.
`

func runExperiment(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch experiment", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), experimentUsage, "\nflags:\n"); fs.PrintDefaults() }
	out := fs.String("out", "", "run folder to create (default: runs/NAME-YYYYMMDD-HHMMSS)")
	verbose := fs.Bool("v", false, "verbose orchestrator logs")
	file, err := parseWithFile(fs, args)
	if err != nil {
		return err
	}
	spec, raw, err := experiment.Load(file)
	if err != nil {
		return err
	}
	dir := *out
	if dir == "" {
		dir = filepath.Join("runs", spec.Name+"-"+time.Now().Format("20060102-150405"))
	}
	sum, err := executeSpec(ctx, spec, raw, dir, *verbose)
	if err != nil {
		return err
	}
	page := filepath.Join(dir, "report.html")
	if err := writeReport([]string{dir}, page, os.Stdout); err != nil {
		return err
	}
	fmt.Printf("\nrun folder: %s\nreport:     %s\n", dir, page)
	if sum.Interrupted {
		return fmt.Errorf("interrupted after %d of %d invocations; the run folder is readable", sum.Done, sum.Planned)
	}
	if sum.Failed > 0 {
		return fmt.Errorf("%d of %d invocations failed (results.csv has their errors)", sum.Failed, sum.Done)
	}
	return nil
}

// executeSpec runs spec against the workers it names and records the run
// folder dir; raw is the experiment file, copied into the folder.
func executeSpec(ctx context.Context, spec *experiment.Spec, raw []byte, dir string, verbose bool) (report.Summary, error) {
	run, err := experiment.Create(dir, spec, raw)
	if err != nil {
		return report.Summary{}, err
	}
	defer run.Close()

	// The orchestrator and the services outlive Ctrl-C until the running
	// invocations finished: they get their own context.
	bg := context.WithoutCancel(ctx)
	local := spec.Workers.Cluster == ""
	c := clusterFlags{clusterFile: spec.Workers.Cluster, workers: spec.Workers.QEMU, kernel: spec.Workers.Kernel,
		initrd: spec.Workers.Initrd, accel: spec.Workers.Accel, boot: spec.Workers.Boot, results: run.ResultsPath(),
		logDir: filepath.Join(dir, "consoles"), powerUp: 60 * time.Second, attempts: 3, verbose: verbose,
		gpioPulse: power.DefaultPulse, gpioHold: power.DefaultForcedOffHold}
	if spec.Mode == experiment.Warm {
		c.idle = time.Duration(spec.Idle)
	}
	if err := os.MkdirAll(c.logDir, 0o700); err != nil { // consoles: owner-only
		return report.Summary{}, err
	}
	names := functions.ServicesFor(spec.Functions)
	if spec.Services == "auto" && len(names) > 0 {
		if !local {
			return report.Summary{}, fmt.Errorf("services: auto starts servers on this host's loopback, which BeagleBone or remote workers cannot reach; set services: cluster and give the cluster file a services: section")
		}
		fmt.Fprintf(os.Stderr, "starting services: %s\n", strings.Join(names, ", "))
		settings, stop, err := experiment.StartServices(bg, names, true)
		if err != nil {
			return report.Summary{}, err
		}
		defer stop()
		c.services = settings
	}
	if !verbose {
		c.quiet = true
	}
	// With a meter, the energy accountant sees every sample and state
	// change, and attributes the meter's joules to invocations at the end.
	var acct *energy.Accountant
	if !spec.Meter.None {
		acct = &energy.Accountant{}
	}
	c.onState = func(sc state.Change) {
		run.StateChanged(sc)
		if acct != nil {
			acct.Observe(sc)
		}
	}
	r, err := c.start(bg)
	if err != nil {
		return report.Summary{}, err
	}
	defer r.Close()
	accel, qemu := "", ""
	if r.qemu != nil {
		accel, qemu = r.qemu.Accel(), "qemu-system-x86_64"
	}
	run.SetHost(experiment.Host(bg, qemu, accel))
	if local {
		run.SetWorkers(spec.Workers.QEMU, "qemu")
		run.CopyManifest(filepath.Join(filepath.Dir(spec.Workers.Kernel), "kernel-manifest.json"), "kernel-manifest.json")
		run.CopyManifest(spec.Workers.Initrd+".json", "initramfs-manifest.json")
	} else if cl, err := cluster.Load(spec.Workers.Cluster); err == nil {
		run.SetWorkers(len(cl.Workers), "cluster")
		// Redacted: the run folder is meant to be shared.
		if err := writeRedactedCluster(filepath.Join(dir, "cluster.yaml"), spec.Workers.Cluster); err != nil {
			return report.Summary{}, err
		}
	}

	meter, err := meterFor(spec.Meter, r, acct)
	if err != nil {
		return report.Summary{}, err
	}
	// Settle lets the last workers power off, so their rows and state
	// intervals are complete before the orchestrator is closed.
	opt := experiment.Options{Meter: meter, Settle: func() { settle(r.orch, 30*time.Second) }}
	if progress.IsTerminal(os.Stderr) {
		opt.Progress = os.Stderr
	}
	fmt.Fprintf(os.Stderr, "experiment %s: %d invocations of %d functions, %s arrivals, %s workers; run folder %s\n",
		spec.Name, spec.Invocations, len(spec.Functions), spec.Arrival.Process, spec.Mode, dir)
	sum, err := run.Execute(ctx, orchCluster{r.orch, time.Duration(spec.Timeout)}, opt)
	if err != nil || acct == nil {
		return sum, err
	}
	res, aerr := acct.Result(time.Now())
	if aerr == nil {
		aerr = addEnergyColumns(run.ResultsPath(), res)
	}
	if aerr == nil {
		aerr = os.WriteFile(filepath.Join(dir, "energy.txt"), []byte(res.Summary()+"\n"), 0o644)
	}
	if aerr != nil {
		fmt.Fprintf(os.Stderr, "energy attribution failed (the run folder has the meter samples and the timeline): %v\n", aerr)
	}
	return sum, nil
}

// addEnergyColumns appends the energy columns (docs/energy.md, "Outputs") to every row
// of the results CSV, replacing the file atomically. A file that has them
// already is left alone.
func addEnergyColumns(path string, res *energy.Result) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil || len(recs) == 0 {
		return fmt.Errorf("reading %s: %v", path, err)
	}
	if slices.Contains(recs[0], energy.CSVColumns[0]) {
		return nil
	}
	var out bytes.Buffer
	w := csv.NewWriter(&out)
	w.Write(append(recs[0], energy.CSVColumns...))
	for _, rec := range recs[1:] {
		w.Write(append(rec, res.CSVFields(rec[0])...))
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	if err := os.WriteFile(path+".tmp", out.Bytes(), 0o600); err != nil { // as openResults
		return err
	}
	return os.Rename(path+".tmp", path)
}

// parseWithFile parses flags before and after one positional FILE.
func parseWithFile(fs *flag.FlagSet, args []string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return "", fmt.Errorf("give an experiment file (examples/experiments/ has some)")
	}
	file := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("one experiment file at a time (extra: %s)", strings.Join(fs.Args(), " "))
	}
	return file, nil
}

// meterFor opens the meter the experiment names (nil for none). The
// cpu-time model reads the CPU time of the run's own QEMU workers.
func meterFor(m experiment.MeterSpec, r *running, acct *energy.Accountant) (energy.Meter, error) {
	if m.None {
		return nil, nil
	}
	var ids []string
	for _, w := range r.orch.Status().Workers {
		ids = append(ids, w.ID)
	}
	cfg := m.Config
	if err := cfg.Validate(ids); err != nil {
		return nil, err
	}
	env := meters.Env{Workers: ids, Log: r.log}
	if r.qemu != nil {
		env.PIDs = r.qemu.PIDs
	}
	em, err := meters.Open(cfg, env)
	if err != nil {
		return nil, err
	}
	return energyMeter{em, acct}, nil
}

// energyMeter hands every sample, per-board series included, to the
// accountant as well as to the run folder (which keeps the whole meter's).
type energyMeter struct {
	energy.Meter
	acct *energy.Accountant
}

func (e energyMeter) Run(ctx context.Context, emit func(energy.Sample)) error {
	return e.Meter.Run(ctx, func(s energy.Sample) {
		e.acct.Add(s)
		emit(s)
	})
}

// orchCluster adapts the orchestrator to experiment.Cluster.
type orchCluster struct {
	o       *orchestrator.Orchestrator
	timeout time.Duration
}

func (c orchCluster) Invoke(ctx context.Context, fn string, args json.RawMessage) (experiment.Result, error) {
	inv, err := c.o.Invoke(ctx, fn, args, c.timeout)
	if err != nil {
		return experiment.Result{}, err
	}
	return experiment.Result{ID: inv.ID, Worker: inv.Worker, Err: orchestrator.ErrText(inv.Err)}, nil
}

// settle waits, up to limit, until no worker is booting, working or
// stopping.
func settle(o *orchestrator.Orchestrator, limit time.Duration) {
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		busy := false
		for _, w := range o.Status().Workers {
			switch w.State {
			case state.Booting, state.Working, state.Stopping:
				busy = true
			}
		}
		if !busy {
			return
		}
	}
}

// writeReport loads run folders, writes the HTML report to page and the
// text summary to text.
func writeReport(dirs []string, page string, text io.Writer) error {
	var runs []*report.Analysis
	for _, d := range dirs {
		r, err := report.Load(d)
		if err != nil {
			return err
		}
		runs = append(runs, report.Analyze(r))
	}
	if err := report.WriteText(text, runs); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(page), 0o755); err != nil {
		return err
	}
	f, err := os.Create(page)
	if err != nil {
		return err
	}
	if err := report.WriteHTML(f, runs, time.Now()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
