package rig

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/lab/report"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/runtime/functions"
)

// Experiment is one experiment to run and record.
type Experiment struct {
	Spec *experiment.Spec
	File []byte // the experiment file, copied into the run folder
	Dir  string // the run folder to create
	Log  *slog.Logger
	// Notes gets what the operator should see (services started, the
	// run's one-line description); Progress a "\r"-updated progress line.
	// Nil: none.
	Notes, Progress io.Writer
	// Policy, if set, is every worker kind's power policy (mforch
	// experiment --policy); unset: the cluster file's, else off.
	Policy cluster.Policy
}

// settleLimit bounds the wait for the last workers to power off.
const settleLimit = 30 * time.Second

// RunExperiment runs e.Spec against the workers it names, with the
// services it needs, and records the run folder e.Dir: results.csv (with
// the energy columns when there is a meter, written by the orchestrator
// as in mforch serve), timeline.csv, meter.csv, energy.txt, manifests, host
// facts and summary.json. Cancelling ctx stops submitting; running
// invocations finish and the folder stays readable.
func RunExperiment(ctx context.Context, e Experiment) (report.Summary, error) {
	spec, notes := e.Spec, e.Notes
	if notes == nil {
		notes = io.Discard
	}
	// A missing kernel or cluster file is told before any service starts
	// or any run folder is made (a half-made folder would block --out).
	if err := spec.CheckInputs(); err != nil {
		return report.Summary{}, err
	}
	run, err := experiment.Create(e.Dir, spec, e.File)
	if err != nil {
		return report.Summary{}, err
	}
	defer run.Close()
	started := false
	defer func() {
		if !started { // nothing ran: leave no folder behind to block the same --out
			run.Close()
			os.RemoveAll(e.Dir)
		}
	}()

	// The orchestrator and the services outlive Ctrl-C until the running
	// invocations finished: they get their own context.
	bg := context.WithoutCancel(ctx)
	local := spec.Workers.Cluster == ""
	cfg := Config{Kernel: spec.Workers.Kernel, Initrd: spec.Workers.Initrd, Accel: spec.Workers.Accel,
		Boot: spec.Workers.Boot, Results: run.ResultsPath(), ConsoleDir: filepath.Join(e.Dir, "consoles"),
		PowerUpTimeout: 60 * time.Second, MaxAttempts: 3, Log: e.Log, OnStateChange: run.StateChanged,
		Policy: e.Policy,
	}
	if e.Policy.Name != "" {
		fmt.Fprintf(notes, "power policy: %s\n", e.Policy)
	}
	if local {
		cfg.Cluster = cluster.Local(spec.Workers.QEMU)
	} else if cfg.Cluster, err = cluster.Load(spec.Workers.Cluster); err != nil {
		return report.Summary{}, err
	}
	if !spec.Meter.None {
		// The whole run's account goes to energy.txt.
		m := spec.Meter.Config
		cfg.Energy = &Energy{Meter: &m, Keep: 365 * 24 * time.Hour}
	}
	if spec.Mode == experiment.Warm {
		cfg.IdleTimeout = time.Duration(spec.Idle)
	}
	if err := os.MkdirAll(cfg.ConsoleDir, 0o700); err != nil { // consoles: owner-only
		return report.Summary{}, err
	}
	if names := functions.ServicesFor(spec.Functions); spec.Services == "auto" && len(names) > 0 {
		if !local {
			return report.Summary{}, fmt.Errorf("services: auto starts servers on this host's loopback, which BeagleBone or remote workers cannot reach; set services: cluster and give the cluster file a services: section")
		}
		fmt.Fprintf(notes, "starting services: %s\n", strings.Join(names, ", "))
		settings, stop, err := experiment.StartServices(bg, names, true)
		if err != nil {
			return report.Summary{}, err
		}
		defer stop()
		cfg.Cluster.Services = settings
	}
	// meter.csv holds the whole meter's samples while the experiment runs;
	// the energy accountant gets all of them.
	var recording atomic.Bool
	cfg.OnSample = func(s energy.Sample) {
		if recording.Load() {
			run.AddSample(s)
		}
	}
	r, err := Start(bg, cfg)
	if err != nil {
		return report.Summary{}, err
	}
	defer r.Close()
	qemu := ""
	if r.Accel() != "" {
		qemu = "qemu-system-x86_64"
	}
	run.SetHost(experiment.Host(bg, qemu, r.Accel()))
	if local {
		run.SetWorkers(spec.Workers.QEMU, "qemu")
		run.CopyManifest(filepath.Join(filepath.Dir(spec.Workers.Kernel), "kernel-manifest.json"), "kernel-manifest.json")
		run.CopyManifest(spec.Workers.Initrd+".json", "initramfs-manifest.json")
	} else {
		run.SetWorkers(len(cfg.Cluster.Workers), "cluster")
		// Redacted: the run folder is meant to be shared.
		if err := writeRedactedCluster(filepath.Join(e.Dir, "cluster.yaml"), spec.Workers.Cluster); err != nil {
			return report.Summary{}, err
		}
	}
	// Settle lets the last workers power off, so their rows and state
	// intervals are complete before the summary is written.
	opt := experiment.Options{Settle: func() { r.Settle(settleLimit) }, Progress: e.Progress}
	fmt.Fprintf(notes, "experiment %s: %d invocations of %d functions, %s arrivals, %s workers; run folder %s\n",
		spec.Name, spec.Invocations, len(spec.Functions), spec.Arrival.Process, spec.Mode, e.Dir)
	recording.Store(true)
	started = true
	sum, err := run.Execute(ctx, orchCluster{r.Orch, time.Duration(spec.Timeout)}, opt)
	recording.Store(false)
	// Every results row gets its final energy, and the account is whole,
	// once the orchestrator has shut down.
	sctx, cancel := context.WithTimeout(bg, time.Minute)
	r.Shutdown(sctx)
	cancel()
	if err != nil {
		return sum, err
	}
	if res := r.EnergyResult(); res != nil {
		if err := os.WriteFile(filepath.Join(e.Dir, "energy.txt"), []byte(res.Summary()+"\n"), 0o644); err != nil {
			return sum, err
		}
	}
	return sum, nil
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

// WriteReport loads run folders, writes the HTML report to page and the
// text summary to text.
func WriteReport(dirs []string, page string, text io.Writer) error {
	return WriteReportWith(dirs, page, text, "")
}

// WriteReportWith is WriteReport with an HTML section (lab/tco's cost
// comparison) placed before the runs.
func WriteReportWith(dirs []string, page string, text io.Writer, section string) error {
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
	if err := report.WriteHTMLWith(f, runs, time.Now(), section); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
