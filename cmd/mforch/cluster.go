package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/runtime/functions"
	"github.com/microfaas/microfaas/target"
)

// clusterFlags are the flags that set up a running orchestrator.
type clusterFlags struct {
	clusterFile, kernel, initrd, armKernel, accel, listen, results, logDir, store string
	boot, snapshotDir                                                             string
	workers                                                                       int
	idle, powerUp                                                                 time.Duration
	maxBooting, attempts                                                          int
	verbose                                                                       bool
	gpioPulse, gpioHold                                                           time.Duration
	energy                                                                        energyFlags
	keep, maxQueue                                                                int
	keepFor, maxTimeout                                                           time.Duration
	// services, if set, replaces the cluster's services: section (mforch
	// experiment starts them itself).
	services map[string]map[string]string
	quiet    bool // log warnings and errors only (a progress line is showing)
	// onState, if set, also observes every worker state change.
	onState func(state.Change)
}

func (c *clusterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.clusterFile, "cluster", "", "cluster file (default: a local cluster of --workers QEMU workers)")
	fs.IntVar(&c.workers, "workers", 3, "without --cluster: how many local QEMU workers")
	fs.StringVar(&c.kernel, "kernel", "out/x86/bzImage", "worker kernel for QEMU workers (mfbuild worker); on x86 a PVH vmlinux beside it boots instead")
	fs.StringVar(&c.initrd, "initrd", "out/x86/initramfs.cpio", "worker initramfs for QEMU workers")
	fs.StringVar(&c.armKernel, "arm-kernel", "out/arm/zImage", "worker kernel for QEMU workers with vm.arch arm (mfbuild worker --arch arm; initramfs linked in)")
	fs.StringVar(&c.accel, "accel", "auto", "QEMU accelerator: auto (probe KVM, else TCG), kvm or tcg")
	fs.StringVar(&c.boot, "boot", power.BootFull, "how x86 QEMU workers start: full (kernel and initramfs) or snapshot\n"+
		"(restore a VM saved where the worker waits for its identity; saved on first use, by image hash)")
	fs.StringVar(&c.snapshotDir, "snapshot-dir", "", "with --boot snapshot: folder of saved VMs (default: ~/.cache/microfaas/snapshots)")
	fs.StringVar(&c.listen, "listen", "", "worker protocol address (default: the cluster file's, or 127.0.0.1:0 for a local cluster)")
	fs.StringVar(&c.results, "results", "results.csv", "results CSV, one row per invocation (appended to)")
	fs.StringVar(&c.store, "store", "", "queue database: accepted invocations survive restarts (e.g. /var/lib/mforch/queue.db; empty: in memory)")
	fs.IntVar(&c.keep, "store-keep", orchestrator.DefaultRetention.Max, "with --store: finished invocations kept (the newest; results stay in --results)")
	fs.DurationVar(&c.keepFor, "store-keep-for", orchestrator.DefaultRetention.MaxAge, "with --store: how long finished invocations are kept")
	fs.IntVar(&c.maxQueue, "max-queue", 1000, "invocations waiting for a worker at most; more are refused (HTTP 429, Retry-After)")
	fs.DurationVar(&c.maxTimeout, "max-timeout", time.Hour, "the longest timeout an invocation may ask for (?timeout=); longer is refused (HTTP 400)")
	fs.StringVar(&c.logDir, "log-dir", "", "worker console logs (default: a temporary folder)")
	fs.DurationVar(&c.idle, "idle", 0, "keep a worker up this long for another job (0: power off after each job)")
	fs.DurationVar(&c.powerUp, "power-up-timeout", 60*time.Second, "how long a worker may take from power-on to connecting")
	fs.IntVar(&c.maxBooting, "max-booting", 0, "workers booting at once (default: all)")
	fs.IntVar(&c.attempts, "attempts", 3, "tries per invocation when workers die mid-job")
	fs.BoolVar(&c.verbose, "v", false, "verbose logs")
	fs.DurationVar(&c.gpioPulse, "gpio-pulse", power.DefaultPulse, "BeagleBone workers: how long a power-on presses PWR_BUT")
	fs.DurationVar(&c.gpioHold, "gpio-forced-off-hold", power.DefaultForcedOffHold, "BeagleBone workers: how long a forced power-off holds PWR_BUT (the PMIC needs more than 8s)")
	c.energy.register(fs)
}

// running is an orchestrator with its listener and power controllers.
type running struct {
	orch    *orchestrator.Orchestrator
	ln      net.Listener
	qemu    *power.QEMU      // the first QEMU controller (the local cluster's)
	qemus   power.QEMUByArch // one per architecture of the cluster's VM workers
	results *os.File
	store   *orchestrator.BoltStore
	logDir  string
	log     *slog.Logger
	energy  *energyRun // nil: no energy accounting
}

func (r *running) Close() {
	r.orch.Close()
	if r.energy != nil {
		r.energy.stop() // after Close, which waits for the meter to pass the last power-off
	}
	r.ln.Close()
	r.qemus.Close()
	r.results.Close()
	if r.store != nil {
		r.store.Close()
	}
}

func (c *clusterFlags) start(ctx context.Context) (*running, error) {
	level := slog.LevelInfo
	if c.verbose {
		level = slog.LevelDebug
	} else if c.quiet {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var cl *cluster.Cluster
	var err error
	if c.clusterFile != "" {
		if cl, err = cluster.Load(c.clusterFile); err != nil {
			return nil, err
		}
	} else {
		cl = cluster.Local(c.workers)
		if c.listen == "" {
			c.listen = "127.0.0.1:0"
		}
	}
	if c.listen == "" {
		c.listen = net.JoinHostPort(cl.Network.Listen, fmt.Sprint(cl.Network.Port))
	}
	if c.services != nil {
		cl.Services = c.services
	}
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return nil, fmt.Errorf("worker protocol listener: %w", err)
	}
	if cl.Network.Port == 0 {
		cl.Network.Port = ln.Addr().(*net.TCPAddr).Port
	}
	r := &running{ln: ln, log: log, logDir: c.logDir, qemus: power.QEMUByArch{}}
	if r.logDir == "" {
		if r.logDir, err = os.MkdirTemp("", "mforch-consoles-"); err != nil {
			return nil, err
		}
	}
	controllers := map[string]power.Controller{}
	for _, w := range cl.Workers {
		if w.Kind == cluster.KindVM && r.qemus[w.VM.Target()] == nil {
			if err := c.startQEMU(ctx, r, cl, w.VM.Target()); err != nil {
				ln.Close()
				r.qemus.Close()
				return nil, err
			}
			controllers[cluster.KindVM] = r.qemus
		}
		if w.Kind == cluster.KindBBB && controllers[cluster.KindBBB] == nil {
			g, err := power.NewGPIO(power.GPIOConfig{Pulse: c.gpioPulse, ForcedOffHold: c.gpioHold, Log: log})
			if err == nil {
				// Fail now, not at the first power-on, on the wrong host
				// or a wrong line in the cluster file.
				err = g.Verify(cl.Workers)
			}
			if err != nil {
				ln.Close()
				return nil, fmt.Errorf("BeagleBone power control: %w", err)
			}
			controllers[cluster.KindBBB] = g
			log.Info("BeagleBone workers powered through GPIO", "pulse", g.Config().Pulse, "forced_off_hold", g.Config().ForcedOffHold)
		}
	}
	if err := os.MkdirAll(filepath.Dir(c.results), 0o755); err != nil {
		return nil, err
	}
	if r.energy, err = c.energy.setup(cl, r.qemu, log); err != nil {
		return nil, err
	}
	columns, newRec := orchestrator.CSVHeader, orchestrator.NewCSVRecorder
	if r.energy != nil {
		columns, newRec = orchestrator.EnergyCSVHeader, orchestrator.NewEnergyCSVRecorder
	}
	var header bool
	if r.results, header, err = openResults(c.results, columns, time.Now(), log); err != nil {
		return nil, err
	}
	csvRec, err := newRec(r.results, header)
	if err != nil {
		return nil, err
	}
	var rec orchestrator.Recorder = csvRec
	var acc *energy.Accountant
	var onState func(state.Change)
	if r.energy != nil {
		rec, acc, onState = orchestrator.MultiRecorder{csvRec, r.energy}, r.energy.acc, r.energy.stateChanged
		r.energy.start() // before any worker powers on
	}
	if extra := c.onState; extra != nil {
		energyObserver := onState
		onState = func(sc state.Change) {
			if energyObserver != nil {
				energyObserver(sc)
			}
			extra(sc)
		}
	}
	var store orchestrator.Store
	if c.store != "" {
		opts := orchestrator.BoltOptions{Log: log, Retention: orchestrator.Retention{Max: c.keep, MaxAge: c.keepFor}}
		if r.store, err = orchestrator.OpenBoltStore(c.store, opts); err != nil {
			return nil, err
		}
		store = r.store
	}
	r.orch, err = orchestrator.New(orchestrator.Config{Cluster: cl, Controllers: controllers, Log: log,
		IdleTimeout: c.idle, PowerUpTimeout: c.powerUp, MaxBooting: c.maxBooting, MaxAttempts: c.attempts,
		Recorder: rec, Store: store, Energy: acc, OnStateChange: onState,
		MaxQueue: c.maxQueue, MaxTimeout: c.maxTimeout, Functions: imageFunctions(c.initrd, log)})
	if err != nil {
		if r.energy != nil {
			r.energy.stop()
		}
		return nil, err
	}
	if r.energy != nil {
		r.energy.orch.Store(r.orch)
	}
	go r.orch.Serve(ln)
	log.Info("orchestrator listening for workers", "addr", ln.Addr().String(), "workers", len(cl.Workers))
	return r, nil
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

// startQEMU starts the QEMU controller of the VM workers of target t.
func (c *clusterFlags) startQEMU(ctx context.Context, r *running, cl *cluster.Cluster, t *target.Target) error {
	kernels := map[*target.Target]string{target.X86: c.kernel, target.ARMv7: c.armKernel}
	cfg := power.QEMUConfig{Arch: t, Kernel: kernels[t], Initrd: c.initrd,
		Accel: c.accel, Cluster: cl, LogDir: r.logDir, Log: r.log, Boot: c.boot, SnapshotDir: c.snapshotDir}
	if !t.QEMU.Snapshot && cfg.Boot == power.BootSnapshot {
		r.log.Warn("snapshot boots are not supported for these workers: they boot in full", "arch", t)
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
	r.log.Info("QEMU workers", "arch", t, "accel", q.Accel(), "boot", cfg.Boot, "kernel", cfg.Kernel, "consoles", r.logDir)
	return nil
}
