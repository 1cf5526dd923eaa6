// Package rig starts a running orchestrator for a cluster: the worker
// listener, the power controllers (QEMU per architecture, GPIO for
// BeagleBones), the results CSV, the queue store and energy accounting,
// from one plain Config. mforch serve, demo and experiment all start
// theirs here; flag parsing stays in cmd/mforch. RunExperiment records an
// experiment's run folder; Operator and ListSensors serve meter calibration.
package rig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/deploy"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/natsq"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/orchestrator/workerlog"
	"github.com/microfaas/microfaas/runtime/functions"
	"github.com/microfaas/microfaas/target"
)

// Config is what a Rig runs. Zero values take the defaults named.
type Config struct {
	// Cluster is the cluster to run (cluster.Load or cluster.Local).
	Cluster *cluster.Cluster
	// Listen is the worker protocol address (default: the cluster's
	// network listen address and port; port 0 picks one).
	Listen string
	// Kernel and Initrd boot x86 QEMU workers; ARMKernel boots ARM ones
	// (its initramfs is linked in).
	Kernel, Initrd, ARMKernel string
	// Accel is QEMU's accelerator: auto (default), kvm or tcg.
	Accel string
	// Boot is how x86 QEMU workers start: power.BootFull (default) or
	// power.BootSnapshot, with saved VMs in SnapshotDir.
	Boot, SnapshotDir string
	// ConsoleDir holds the workers' console logs (default: a new
	// temporary folder).
	ConsoleDir string
	// Results is the results CSV, appended to (required).
	Results string
	// Store is the queue database (empty: in memory), pruned by Retention.
	Store     string
	Retention orchestrator.Retention
	// Queue, if set, is a queue on NATS JetStream that several mforch
	// instances share (docs/scale-out.md), in place of Store.
	Queue *natsq.Options
	// Orchestrator limits, as in orchestrator.Config.
	IdleTimeout, PowerUpTimeout, MaxTimeout time.Duration
	MaxBooting, MaxAttempts, MaxQueue       int
	// Policy, if set, is every worker kind's power policy; unset, each
	// kind has the cluster file's (policies:), else off.
	Policy cluster.Policy
	// GPIO times BeagleBone power buttons (its Log is the rig's).
	GPIO power.GPIOConfig
	// Energy says how energy is accounted (nil: it is not).
	Energy *Energy
	// Deploys, if set, holds the functions deployed at run time (mforch
	// serve: deploy.Store in the state folder); the orchestrator sends
	// their bundles with their jobs.
	Deploys *deploy.Store
	// OnStateChange, if set, observes every worker state change (from the
	// orchestrator's loop: it must not block).
	OnStateChange func(state.Change)
	// OnSample, if set, gets every meter sample, per-board series included.
	OnSample func(energy.Sample)
	Log      *slog.Logger // default: slog.Default()
	Clock    clock.Clock  // default: the system clock
}

// Energy configures energy accounting (docs/energy.md).
type Energy struct {
	// Meter, if set, is the meter, in place of the cluster's meter:
	// section (an experiment file's meter:).
	Meter *energy.Config
	// Model and Interval are the CPU-time model's, used for a cluster of
	// QEMU workers only that names no meter.
	Model    energy.CPUModel
	Interval time.Duration
	// Keep is how much history attribution keeps (default 1 h, as
	// orchestrator.Config.EnergyKeep); an experiment keeps its whole run.
	Keep time.Duration
}

// Rig is a running orchestrator with everything it was started with.
type Rig struct {
	Orch       *orchestrator.Orchestrator
	Deploys    *deploy.Store // nil: no run-time deploys
	Cluster    *cluster.Cluster
	Log        *slog.Logger
	ConsoleDir string
	// WorkerLogs keeps each worker boot's log (ConsoleDir/boots).
	WorkerLogs *workerlog.Book

	ln      net.Listener
	qemu    *power.QEMU      // the first QEMU controller
	qemus   power.QEMUByArch // one per architecture of the cluster's VM workers
	results *os.File
	store   *orchestrator.BoltStore
	queue   *natsq.Queue
	meter   *meterRun // nil: no energy accounting
	clock   clock.Clock
}

// ErrConfig is a Config that cannot run.
var ErrConfig = errors.New("rig: bad configuration")

// Start starts the orchestrator cfg describes, listening for workers (all
// off). Close it.
func Start(ctx context.Context, cfg Config) (_ *Rig, err error) {
	if cfg.Cluster == nil {
		return nil, fmt.Errorf("%w: no cluster (cluster.Load or cluster.Local)", ErrConfig)
	}
	if cfg.Results == "" {
		return nil, fmt.Errorf("%w: no results file", ErrConfig)
	}
	cfg.Clock = clock.OrReal(cfg.Clock)
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	cl, log := cfg.Cluster, cfg.Log
	r := &Rig{Cluster: cl, Log: log, ConsoleDir: cfg.ConsoleDir, Deploys: cfg.Deploys, qemus: power.QEMUByArch{}, clock: cfg.Clock}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	listen := cfg.Listen
	if listen == "" {
		listen = net.JoinHostPort(cl.Network.Listen, fmt.Sprint(cl.Network.Port))
	}
	if r.ln, err = net.Listen("tcp", listen); err != nil {
		return nil, fmt.Errorf("worker protocol listener: %w", err)
	}
	if cl.Network.Port == 0 {
		cl.Network.Port = r.ln.Addr().(*net.TCPAddr).Port
	}
	if r.ConsoleDir == "" {
		if r.ConsoleDir, err = os.MkdirTemp("", "mforch-consoles-"); err != nil {
			return nil, err
		}
	}
	if r.WorkerLogs, err = workerlog.Open(filepath.Join(r.ConsoleDir, "boots"), workerlog.Options{}); err != nil {
		return nil, err
	}
	controllers, err := r.controllers(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// The meter's recorder comes first: the orchestrator feeds it state
	// changes, it never needs the orchestrator.
	if r.meter, err = setupMeter(cfg, r.qemu); err != nil {
		return nil, err
	}
	columns, newRec := orchestrator.CSVHeader, orchestrator.NewCSVRecorder
	var acc *energy.Accountant
	onState := cfg.OnStateChange
	if r.meter != nil {
		columns, newRec, acc = orchestrator.EnergyCSVHeader, orchestrator.NewEnergyCSVRecorder, r.meter.acc
		onState = r.meter.observer(cfg.OnStateChange)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Results), 0o755); err != nil {
		return nil, err
	}
	var header bool
	if r.results, header, err = openResults(cfg.Results, columns, cfg.Clock.Now(), log); err != nil {
		return nil, err
	}
	rec, err := newRec(r.results, header)
	if err != nil {
		return nil, err
	}
	var store orchestrator.Store
	var queue orchestrator.SharedQueue
	if cfg.Queue != nil {
		if cfg.Store != "" {
			return nil, fmt.Errorf("%w: a queue database (--store) and a shared queue (--queue) are both set: the shared queue keeps everything, drop --store", ErrConfig)
		}
		qo := *cfg.Queue
		if qo.Log == nil {
			qo.Log = log
		}
		if r.queue, err = natsq.Open(ctx, qo); err != nil {
			return nil, err
		}
		queue = r.queue
		log.Info("shared queue on NATS JetStream", "servers", qo.URLs, "stream", r.queue.Options().Stream, "ack_wait", r.queue.Options().AckWait)
	}
	if cfg.Store != "" {
		if r.store, err = orchestrator.OpenBoltStore(cfg.Store, orchestrator.BoltOptions{Log: log, Retention: cfg.Retention}); err != nil {
			return nil, err
		}
		store = r.store
	}
	if r.meter != nil {
		r.meter.start() // before any worker powers on
	}
	var bundles orchestrator.Bundles
	if cfg.Deploys != nil {
		bundles = cfg.Deploys
	}
	r.Orch, err = orchestrator.New(orchestrator.Config{Bundles: bundles, Cluster: cl, Controllers: controllers, Log: log, Clock: cfg.Clock,
		IdleTimeout: cfg.IdleTimeout, PowerUpTimeout: cfg.PowerUpTimeout, MaxBooting: cfg.MaxBooting, MaxAttempts: cfg.MaxAttempts,
		Recorder: rec, Store: store, Queue: queue, Energy: acc, EnergyKeep: r.meter.keep(), OnStateChange: onState,
		MaxQueue: cfg.MaxQueue, MaxTimeout: cfg.MaxTimeout, Functions: imageFunctions(cfg.Initrd, log),
		Policy: policies(cl, cfg.Policy), WorkerLogs: r.WorkerLogs})
	if err != nil {
		return nil, err
	}
	go r.Orch.Serve(r.ln)
	log.Info("orchestrator listening for workers", "addr", r.ln.Addr().String(), "workers", len(cl.Workers))
	return r, nil
}

// controllers starts the power controllers the cluster's workers need.
func (r *Rig) controllers(ctx context.Context, cfg Config) (map[string]power.Controller, error) {
	controllers := map[string]power.Controller{}
	for _, w := range cfg.Cluster.Workers {
		if w.Kind == cluster.KindVM && r.qemus[w.VM.Target()] == nil {
			if err := r.startQEMU(ctx, cfg, w.VM.Target()); err != nil {
				return nil, err
			}
			controllers[cluster.KindVM] = r.qemus
		}
		if w.Kind == cluster.KindBBB && controllers[cluster.KindBBB] == nil {
			gc := cfg.GPIO
			gc.Log = r.Log
			g, err := power.NewGPIO(gc)
			if err == nil {
				// Fail now, not at the first power-on, on the wrong host
				// or a wrong line in the cluster file.
				err = g.Verify(cfg.Cluster.Workers)
			}
			if err != nil {
				return nil, fmt.Errorf("BeagleBone power control: %w", err)
			}
			controllers[cluster.KindBBB] = g
			r.Log.Info("BeagleBone workers powered through GPIO", "pulse", g.Config().Pulse, "forced_off_hold", g.Config().ForcedOffHold)
		}
	}
	return controllers, nil
}

// startQEMU starts the QEMU controller of the VM workers of target t.
func (r *Rig) startQEMU(ctx context.Context, c Config, t *target.Target) error {
	kernels := map[*target.Target]string{target.X86: c.Kernel, target.ARMv7: c.ARMKernel}
	cfg := power.QEMUConfig{Arch: t, Kernel: kernels[t], Initrd: c.Initrd,
		Accel: c.Accel, Cluster: c.Cluster, LogDir: r.ConsoleDir, Log: r.Log, Boot: c.Boot, SnapshotDir: c.SnapshotDir,
		Console: r.WorkerLogs.Console}
	if cfg.Accel == "" {
		cfg.Accel = "auto"
	}
	if cfg.Boot == "" {
		cfg.Boot = power.BootFull
	}
	if !t.QEMU.Snapshot && cfg.Boot == power.BootSnapshot {
		r.Log.Warn("snapshot boots are not supported for these workers: they boot in full", "arch", t)
		cfg.Boot = power.BootFull
	}
	if t.InitramfsLinked {
		cfg.Initrd = ""
	}
	q, err := power.NewQEMU(ctx, cfg)
	if err != nil {
		return fmt.Errorf("%s QEMU workers: %w", t, err)
	}
	r.qemus[t] = q
	if r.qemu == nil {
		r.qemu = q
	}
	r.Log.Info("QEMU workers", "arch", t, "accel", q.Accel(), "boot", cfg.Boot, "kernel", cfg.Kernel, "consoles", r.ConsoleDir)
	return nil
}

// Addr is the worker protocol listener's address.
func (r *Rig) Addr() net.Addr { return r.ln.Addr() }

// Accel is the first QEMU controller's accelerator ("" without QEMU workers).
func (r *Rig) Accel() string {
	if r.qemu == nil {
		return ""
	}
	return r.qemu.Accel()
}

// EnergyResult is the run's energy account once Shutdown returned (nil
// without energy accounting or samples).
func (r *Rig) EnergyResult() *energy.Result {
	if r.meter == nil || r.Orch == nil {
		return nil
	}
	return r.Orch.EnergyResult()
}

// Shutdown lets running jobs finish until ctx ends, powers the workers off
// and stops the meter once the orchestrator has its last sample: every
// results row and the energy account are final then.
func (r *Rig) Shutdown(ctx context.Context) {
	if r.Orch != nil {
		r.Orch.Shutdown(ctx)
	}
	if r.meter != nil {
		r.meter.stop()
	}
}

// Close shuts down at once (running jobs are not waited for) and releases
// everything Start opened.
func (r *Rig) Close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.Shutdown(ctx)
	if r.ln != nil {
		r.ln.Close()
	}
	r.qemus.Close()
	if r.results != nil {
		r.results.Close()
	}
	if r.store != nil {
		r.store.Close()
	}
	if r.queue != nil {
		r.queue.Close() // after the orchestrator: gives back what it did not finish
	}
}

// Settle waits, up to limit, until no worker is booting, working or
// stopping, so the last state intervals and results rows are complete.
func (r *Rig) Settle(limit time.Duration) {
	c := r.clock
	for end := c.Now().Add(limit); c.Now().Before(end); clock.Sleep(c, 50*time.Millisecond, nil) {
		busy := false
		for _, w := range r.Orch.Status().Workers {
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

// imageFunctions lists the functions of the QEMU workers' image, so mforch
// refuses an unknown one at submit: the built-ins, and the user functions
// the initramfs's manifest (mfbuild writes INITRD.json) names. Without a
// manifest it returns nil: every name is accepted until a worker's hello
// says what it has.
func imageFunctions(initrd string, log *slog.Logger) []string {
	b, err := os.ReadFile(initrd + ".json")
	if err != nil {
		return nil
	}
	var m struct {
		Inputs map[string]string `json:"inputs"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		log.Warn("initramfs manifest unreadable: unknown functions are refused only once a worker has said hello", "file", initrd+".json", "err", err)
		return nil
	}
	names := functions.Names()
	for k := range m.Inputs {
		if fn, ok := strings.CutPrefix(k, "function:"); ok {
			names = append(names, fn)
		}
	}
	return names
}

// policies are the power policies by worker kind: override for every kind
// when set, else the cluster file's.
func policies(cl *cluster.Cluster, override cluster.Policy) map[string]cluster.Policy {
	m := map[string]cluster.Policy{}
	for _, kind := range []string{cluster.KindBBB, cluster.KindVM} {
		m[kind] = cl.Policy(kind)
		if override.Name != "" {
			m[kind] = override
		}
	}
	return m
}
