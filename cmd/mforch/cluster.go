package main

import (
	"flag"
	"log/slog"
	"os"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/lab/rig"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/power"
)

// clusterFlags are mforch serve's flags for its rig: they only fill a
// rig.Config (lab/rig starts it).
type clusterFlags struct {
	cfg               rig.Config
	energy            rig.Energy
	clusterFile       string
	workers           int
	verbose, energyOn bool
}

func (c *clusterFlags) register(fs *flag.FlagSet) {
	r := &c.cfg
	fs.StringVar(&c.clusterFile, "cluster", "", "cluster file (default: a local cluster of --workers QEMU workers)")
	fs.IntVar(&c.workers, "workers", 3, "without --cluster: how many local QEMU workers")
	fs.StringVar(&r.Kernel, "kernel", "out/x86/bzImage", "worker kernel for QEMU workers (mfbuild worker); on x86 a PVH vmlinux beside it boots instead")
	fs.StringVar(&r.Initrd, "initrd", "out/x86/initramfs.cpio", "worker initramfs for QEMU workers")
	fs.StringVar(&r.ARMKernel, "arm-kernel", "out/arm/zImage", "worker kernel for QEMU workers with vm.arch arm (mfbuild worker --arch arm; initramfs linked in)")
	fs.StringVar(&r.Accel, "accel", "auto", "QEMU accelerator: auto (probe KVM, else TCG), kvm or tcg")
	fs.StringVar(&r.Boot, "boot", power.BootFull, "how x86 QEMU workers start: full (kernel and initramfs) or snapshot\n"+
		"(restore a VM saved where the worker waits for its identity; saved on first use, by image hash)")
	fs.StringVar(&r.SnapshotDir, "snapshot-dir", "", "with --boot snapshot: folder of saved VMs (default: ~/.cache/microfaas/snapshots)")
	fs.StringVar(&r.Listen, "listen", "", "worker protocol address (default: the cluster file's, or 127.0.0.1:0 for a local cluster)")
	fs.StringVar(&r.Results, "results", "", "results CSV, one row per invocation (appended to; default: results.csv in the state folder,\n"+
		"$STATE_DIRECTORY, else $XDG_STATE_HOME/microfaas, else ~/.local/state/microfaas)")
	fs.StringVar(&r.Store, "store", "", "queue database: accepted invocations survive restarts (e.g. /var/lib/mforch/queue.db; empty: in memory)")
	fs.IntVar(&r.Retention.Max, "store-keep", orchestrator.DefaultRetention.Max, "with --store: finished invocations kept (the newest; results stay in --results)")
	fs.DurationVar(&r.Retention.MaxAge, "store-keep-for", orchestrator.DefaultRetention.MaxAge, "with --store: how long finished invocations are kept")
	fs.IntVar(&r.MaxQueue, "max-queue", 1000, "invocations waiting for a worker at most; more are refused (HTTP 429, Retry-After)")
	fs.DurationVar(&r.MaxTimeout, "max-timeout", time.Hour, "the longest timeout an invocation may ask for (?timeout=); longer is refused (HTTP 400)")
	fs.StringVar(&r.ConsoleDir, "log-dir", "", "worker console logs (default: consoles/ in the state folder), and in its boots/ each worker\n"+
		"boot's own log (kernel, mfinit, console; the last 20 boots, 1 MiB each: mforch logs)")
	fs.DurationVar(&r.IdleTimeout, "idle", 0, "keep a worker up this long for another job (0: power off after each job)")
	policyFlag(fs, &r.Policy)
	fs.DurationVar(&r.PowerUpTimeout, "power-up-timeout", 60*time.Second, "how long a worker may take from power-on to connecting")
	fs.IntVar(&r.MaxBooting, "max-booting", 0, "workers booting at once (default: all)")
	fs.IntVar(&r.MaxAttempts, "attempts", 3, "tries per invocation when workers die mid-job")
	fs.BoolVar(&c.verbose, "v", false, "verbose logs")
	fs.DurationVar(&r.GPIO.Pulse, "gpio-pulse", power.DefaultPulse, "BeagleBone workers: how long a power-on presses PWR_BUT")
	fs.DurationVar(&r.GPIO.ForcedOffHold, "gpio-forced-off-hold", power.DefaultForcedOffHold, "BeagleBone workers: how long a forced power-off holds PWR_BUT (the PMIC needs more than 8s)")
	fs.BoolVar(&c.energyOn, "energy", true, "account energy per invocation: with the cluster file's meter: section, or for QEMU workers\n"+
		"the CPU-time model (--meter-idle-watts, --meter-watts-per-core); a MODEL, not a measurement")
	fs.Float64Var(&c.energy.Model.IdleWatts, "meter-idle-watts", 0, "CPU-time model: the host's power with every VM idle (unattributed baseline)")
	fs.Float64Var(&c.energy.Model.WattsPerCore, "meter-watts-per-core", 10, "CPU-time model: power per core a QEMU worker keeps busy\n"+
		"(measure it once on a host with RAPL or a wall meter: mforch meter calibrate)")
	fs.DurationVar(&c.energy.Interval, "meter-interval", time.Second, "CPU-time model: sampling interval")
}

// policyFlag registers --policy, which sets p for every worker kind.
func policyFlag(fs *flag.FlagSet, p *cluster.Policy) {
	fs.Func("policy", "what a worker does after its job, for every worker kind: "+cluster.PolicyHelp+"\n"+
		"(off: power off; reboot-while-queued: reboot when work waits, else power off;\n"+
		"warm-pool=N: power off, and keep N freshly booted workers ready; default: the cluster file's policies:, else off)",
		func(s string) error {
			v, err := cluster.ParsePolicy(s)
			*p = v
			return err
		})
}

// config is the rig.Config the flags describe.
func (c *clusterFlags) config() (rig.Config, error) {
	cfg := c.cfg
	level := slog.LevelInfo
	if c.verbose {
		level = slog.LevelDebug
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if c.energyOn {
		cfg.Energy = &c.energy
	}
	if err := cfg.StateDefaults(); err != nil {
		return cfg, err
	}
	cfg.Cluster = cluster.Local(c.workers)
	if c.clusterFile != "" {
		var err error
		if cfg.Cluster, err = cluster.Load(c.clusterFile); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}
