package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/runtime/debugshell"
	"github.com/microfaas/microfaas/runtime/flash"
	"github.com/microfaas/microfaas/runtime/functions"
	"github.com/microfaas/microfaas/runtime/sandbox"
	"github.com/microfaas/microfaas/runtime/shiplog"
)

// Boot is PID 1 of a worker: it runs the boot steps below in order, then
// powers the machine off (or resets it: mf.off=reboot, or the
// orchestrator's reboot command). A step that fails ends the boot, and Boot
// returns its *StepError; the flasher and the probe end it as planned, with
// no error. Boot recovers a panic and powers off too: the kernel panics when
// init exits. On a worker it returns only if powering off failed.
//
// The steps (bootSteps):
//
//	 1 init marker       print MFINIT-START with the kernel uptime (the host times the boot to here)
//	 2 key file          take /run/mf/key (read once, deleted) before /run's tmpfs hides it
//	 3 bundle files      list the bundles the kernel unpacked from the initramfs
//	                     (/bundles/<hex>: config.json, rootfs/) and hash them in the
//	                     background from here on; a job waits for the check
//	 4 mounts            proc, sys, dev, tmp, run, configfs (a failure is logged; the boot goes on)
//	 5 boot parameters   read /proc/cmdline once into bootparams.Params and the worker's Config
//	 6 debug shell       mf.debug=1: a shell on the console; the power-off waits until it ends
//	 7 flasher           mf.flash=1: write the eMMC (runtime/flash) instead of serving; ends the boot
//	 8 probe             mf.probe=1: print MFINIT-PROBE-OK; ends the boot
//	 9 check parameters  a bad or incomplete command line ends the boot here
//	10 card key          no key file: read the key area of the board's card; no key ends the boot
//	                     (a snapshot boot's key comes with its identity, step 13)
//	11 snapshot sandbox  mf.snapshot=1: set the function sandbox up now, so the snapshot holds it
//	12 network           wait for carrier on mf.iface (10 s at most; a failure is logged)
//	13 identity          mf.snapshot=1: print MFINIT-SNAPSHOT-READY, read the identity from the
//	                     console (the VM is restored here), reseed the RNG, set the clock
//	14 serve             connect to the orchestrator and run jobs until told to stop
func Boot(ctx context.Context) error {
	return realMachine().boot(ctx)
}

// bootSteps is the boot, in order; Boot's comment lists it for readers
// (TestBootStepsDocumented keeps the two the same).
var bootSteps = []step{
	{"init marker", (*booting).initMarker},
	{"key file", (*booting).keyFile},
	{"bundle files", (*booting).bundleFiles},
	{"mounts", (*booting).mounts},
	{"boot parameters", (*booting).bootParams},
	{"debug shell", (*booting).debugShell},
	{"flasher", (*booting).flasher},
	{"probe", (*booting).probe},
	{"check parameters", (*booting).checkParams},
	{"card key", (*booting).cardKey},
	{"snapshot sandbox", (*booting).snapshotSandbox},
	{"network", (*booting).network},
	{"identity", (*booting).identity},
	{"serve", (*booting).serve},
}

// step is one named step of the boot.
type step struct {
	name string
	run  func(b *booting, ctx context.Context) error
}

// StepError is the error of the boot step that ended the boot.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string {
	return fmt.Sprintf("boot step %q: %v", e.Step, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// ErrPanicked: the worker itself panicked (not a function: their panics are
// error results); Boot powers off.
var ErrPanicked = errors.New("mfinit panicked")

// errEnd ends the boot early, as planned (the flasher, the probe).
var errEnd = errors.New("boot ends here")

// runSteps runs steps in order until one fails (a *StepError naming it)
// or ends the boot (nil).
func runSteps(ctx context.Context, steps []step, b *booting) error {
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return &StepError{s.name, err}
		}
		err := s.run(b, ctx)
		if errors.Is(err, errEnd) {
			return nil
		}
		if err != nil {
			return &StepError{s.name, err}
		}
	}
	return nil
}

// machine is everything the boot steps touch; realMachine is a worker's,
// tests build their own.
type machine struct {
	console      io.Writer // the serial console: the markers
	input        io.Reader // the console's input: the identity line
	noEcho       func() error
	log          *slog.Logger
	uptime       func() float64
	takeKey      func() ([]byte, error)
	takeBundles  func() (map[string]string, error) // nil: none
	bundleDir    string                            // where fetched bundles are unpacked ("": DefaultBundleWorkDir)
	mount        func() error
	cmdline      func() (string, error)
	debugShell   func(*slog.Logger) waiter
	flash        func(out io.Writer, p bootparams.Params, parseErr error)
	cardKey      func() ([]byte, error)
	sandbox      func() error
	waitLink     func(iface string) error
	reseed       func(seed []byte) error
	setClock     func(time.Time) error
	functionsDir string
	serve        func(*Worker, context.Context) Outcome // (*Worker).Run
	powerOff     func(mode string) error
	// logs holds the worker's own log for the orchestrator: log writes
	// into it, and so does readKernelLog, started before serving (nil:
	// nothing is shipped).
	logs          *shiplog.Ring
	readKernelLog func(*shiplog.Ring) error
}

// waiter is a running debug shell.
type waiter interface{ Wait() }

// linkWait is how long the network step waits for carrier. The kernel's
// ip= has normally brought the link up before PID 1 starts.
const linkWait = 10 * time.Second

func realMachine() machine {
	// mfinit's log goes to the console and to the orchestrator
	// (runtime/shiplog); a function's output goes to neither.
	logs := shiplog.NewRing(0, 0)
	return machine{
		logs:          logs,
		readKernelLog: readKernelLog,
		console:       os.Stdout,
		input:         os.Stdin,
		noEcho:        func() error { return ConsoleNoEcho(int(os.Stdin.Fd())) },
		log: slog.New(slog.NewTextHandler(io.MultiWriter(os.Stderr, shiplog.NewWriter(logs, protocol.LogMfinit)),
			&slog.HandlerOptions{Level: slog.LevelInfo})),
		uptime:       Uptime,
		takeKey:      func() ([]byte, error) { return TakeKey(protocol.KeyPath) },
		takeBundles:  func() (map[string]string, error) { return TakeBundles(DeliveredBundlesDir) },
		mount:        MountAll,
		cmdline:      func() (string, error) { b, err := os.ReadFile("/proc/cmdline"); return string(b), err },
		debugShell:   func(log *slog.Logger) waiter { return debugshell.Start(log) },
		flash:        flash.Main,
		cardKey:      func() ([]byte, error) { return CardKey(CardDevices) },
		sandbox:      sandbox.Prepare,
		waitLink:     func(iface string) error { return WaitLink(iface, linkWait) },
		reseed:       Reseed,
		setClock:     SetWallClock,
		functionsDir: "/functions",
		serve:        (*Worker).Run,
		powerOff:     PowerOff,
	}
}

// booting is what the steps have learned so far.
type booting struct {
	m        machine
	off      string // the power-off mode
	key      []byte
	keyErr   error
	params   bootparams.Params
	parseErr error // bootparams.Parse's
	cfg      Config
	cfgErr   error // the command line's first error: the parse's, then ConfigFrom's
	shell    waiter
	times    protocol.BootTimes
	bundles  *Bundles // delivered with the initramfs (by digest), for the worker
	nBundles int      // how many were delivered
}

// boot runs bootSteps on m and powers off.
func (m machine) boot(ctx context.Context) (err error) {
	b := &booting{m: m, off: bootparams.PowerOff}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrPanicked, p)
			m.log.Error("mfinit panicked; powering off", "panic", p)
		}
		if b.shell != nil {
			b.shell.Wait()
		}
		if perr := m.powerOff(b.off); perr != nil {
			m.log.Error("power off failed", "err", perr)
		}
	}()
	err = runSteps(ctx, bootSteps, b)
	var se *StepError
	if errors.As(err, &se) {
		m.log.Error("boot failed; powering off", "step", se.Step, "err", se.Err)
	}
	return err
}

func (b *booting) initMarker(context.Context) error {
	b.times.InitMS = b.m.uptime()
	_, err := fmt.Fprintf(b.m.console, "%s uptime_ms=%.0f\n", protocol.InitMarker, b.times.InitMS)
	if err != nil {
		b.m.log.Error("console", "err", err)
	}
	return nil
}

// keyFile runs before anything else can read the key, and before /run
// gets its tmpfs (which would hide the file). Its error waits for the card
// key step: a snapshot boot gets its key later and ignores it.
func (b *booting) keyFile(context.Context) error {
	b.key, b.keyErr = b.m.takeKey()
	return nil
}

// bundleFiles finds the bundles of run-time deployed functions the
// initramfs carries (a QEMU worker's, for the function it is powered on
// for), unpacked by the kernel. None is no failure: the worker fetches
// what it lacks.
func (b *booting) bundleFiles(context.Context) error {
	if b.m.takeBundles == nil {
		return nil
	}
	trees, err := b.m.takeBundles()
	if err != nil {
		b.m.log.Error("bundles delivered with the initramfs", "err", err)
	}
	b.bundles = &Bundles{Delivered: trees, WorkDir: b.m.bundleDir, Log: b.m.log}
	b.nBundles = len(trees)
	// Hashed while the boot goes on: on one vCPU the hash is the longest
	// pole of a cold call, so it starts as early as it can (the tree is
	// not under /run, which a tmpfs hides at the next step).
	b.bundles.CheckDelivered()
	return nil
}

func (b *booting) mounts(context.Context) error {
	if err := b.m.mount(); err != nil {
		b.m.log.Error("mounting filesystems", "err", err)
	}
	return nil
}

// bootParams parses the command line, the one time it is parsed. A bad one
// is refused only at checkParams: its power-off mode, debug shell, flasher
// and probe still act, as far as they could be read.
func (b *booting) bootParams(context.Context) error {
	cmdline, err := b.m.cmdline()
	if err != nil {
		return fmt.Errorf("reading the kernel command line: %w", err)
	}
	b.params, b.parseErr = bootparams.Parse(cmdline)
	var cfgErr error
	b.cfg, cfgErr = ConfigFrom(b.params)
	b.cfgErr = b.parseErr
	if b.cfgErr == nil {
		b.cfgErr = cfgErr
	}
	if b.cfg.OffMode != "" {
		b.off = b.cfg.OffMode
	}
	return nil
}

func (b *booting) debugShell(context.Context) error {
	if b.params.Debug {
		b.shell = b.m.debugShell(b.m.log)
	}
	return nil
}

// flasher runs instead of the worker on a flasher SD card. It reports a bad
// command line itself (on the console, until someone looks).
func (b *booting) flasher(context.Context) error {
	if b.params.Flash == nil {
		return nil
	}
	b.m.flash(b.m.console, b.params, b.parseErr)
	return errEnd
}

func (b *booting) probe(context.Context) error {
	if !b.cfg.Probe {
		return nil
	}
	fmt.Fprintf(b.m.console, "%s uptime_ms=%.0f\n", ProbeMarker, b.times.InitMS)
	return errEnd
}

func (b *booting) checkParams(context.Context) error {
	if b.cfgErr != nil {
		return fmt.Errorf("bad kernel command line: %w", b.cfgErr)
	}
	return nil
}

// cardKey: a board's key is on the card it booted from. A snapshot boot's
// key comes with its identity instead.
func (b *booting) cardKey(context.Context) error {
	if b.cfg.Snapshot {
		return nil
	}
	if b.key == nil && b.keyErr == nil {
		b.key, b.keyErr = b.m.cardKey()
	}
	if b.keyErr != nil {
		return b.keyErr
	}
	if b.key == nil {
		return ErrNoKey
	}
	return nil
}

// snapshotSandbox: on a snapshot boot everything a worker does before it
// needs to know who it is happens before the snapshot, so the snapshot
// holds it done. (A full boot sets the sandbox up once connected: serve.)
func (b *booting) snapshotSandbox(context.Context) error {
	if !b.cfg.Snapshot {
		return nil
	}
	if err := b.m.sandbox(); err != nil {
		b.m.log.Error("function sandbox", "err", err)
	}
	return nil
}

func (b *booting) network(context.Context) error {
	if err := b.m.waitLink(b.cfg.Iface); err != nil {
		b.m.log.Error("network", "err", err)
	}
	b.times.NetworkMS = b.m.uptime()
	return nil
}

// identity is a snapshot boot's wait for who it is: the host saves the VM
// while it waits, and everything after the identity line runs once per
// restore. The RNG is reseeded and the clock set before anything random or
// timed happens.
func (b *booting) identity(context.Context) error {
	if !b.cfg.Snapshot {
		return nil
	}
	// The identity carries the key: it must not echo into the console log.
	if err := b.m.noEcho(); err != nil {
		return err
	}
	fmt.Fprintf(b.m.console, "%s uptime_ms=%.0f\n", protocol.SnapshotReadyMarker, b.times.NetworkMS)
	got, err := WaitIdentity(b.m.input)
	if err != nil {
		return err
	}
	b.times.RestoredMS = b.m.uptime()
	// Never run on the snapshot's entropy: every restore has the same.
	if err := b.m.reseed(got.Seed); err != nil {
		return err
	}
	if err := b.m.setClock(time.Unix(0, got.Identity.NowUnixNS)); err != nil {
		b.m.log.Warn("could not set the wall clock from the identity", "err", err)
	}
	if err := bootparams.ValidID(got.Identity.ID); err != nil {
		return err
	}
	if err := bootparams.ValidOrch(got.Identity.Orch); err != nil {
		return err
	}
	b.cfg.ID, b.cfg.Orch, b.key, b.keyErr = got.Identity.ID, got.Identity.Orch, got.Key, nil
	return nil
}

func (b *booting) serve(ctx context.Context) error {
	w := &Worker{Config: b.cfg, Key: b.key, Log: b.m.log, Env: functions.Env{FunctionsDir: b.m.functionsDir},
		SetClock: b.m.setClock, Boot: b.times, Bundles: b.bundles, Logs: b.m.logs}
	if b.m.logs != nil && b.m.readKernelLog != nil {
		// The kernel keeps its log since boot: read now, it starts with
		// "Linux version".
		go func() {
			if err := b.m.readKernelLog(b.m.logs); err != nil {
				b.m.log.Warn("kernel log: not shipped from here on", "err", err)
			}
		}()
	}
	// A full boot sets the function sandbox up only if the worker has user
	// functions or a bundle (built-ins run in this process), and only once
	// its hello is out: on one vCPU it would otherwise compete with the
	// connection.
	if !b.cfg.Snapshot && (len(functions.UserNames(w.Env.FunctionsDir)) > 0 || b.nBundles > 0) {
		w.Connected = func() {
			if err := b.m.sandbox(); err != nil {
				b.m.log.Error("function sandbox", "err", err)
			}
		}
	}
	out := b.m.serve(w, ctx)
	b.m.log.Info("worker done", "action", out.Action, "reason", out.Reason,
		"init_ms", w.Boot.InitMS, "network_ms", w.Boot.NetworkMS, "connected_ms", w.Boot.ConnectedMS)
	if out.Action == protocol.CmdReboot {
		b.off = bootparams.Reboot
	}
	return nil
}
