// Command mfinit is the MicroFaaS worker. As PID 1 of a worker's initramfs
// it boots the worker, serves the orchestrator and powers off. Run by hand it
// runs one function on the host, for developing functions:
//
//	mfinit invoke [--functions DIR] NAME 'ARGS_JSON'
//	mfinit functions
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/runtime"
	"github.com/microfaas/microfaas/runtime/debugshell"
	"github.com/microfaas/microfaas/runtime/flash"
	"github.com/microfaas/microfaas/runtime/functions"
	"github.com/microfaas/microfaas/runtime/sandbox"
)

const usage = `usage:
  mfinit                         as PID 1: boot the worker (parameters on the kernel command line)
  mfinit invoke [--functions DIR] NAME [ARGS_JSON]
                                 run one function on this host and print its result as JSON;
                                 DIR holds user functions (executables, image folders), run
                                 contained as on a worker (as an ordinary user: in a user
                                 namespace, as yourself)
  mfinit functions               list the built-in functions
`

func main() {
	// A function's sandbox helper is this binary re-executed (runtime/sandbox).
	sandbox.MaybeMain()
	if os.Getpid() == 1 {
		asInit()
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "invoke":
		os.Exit(invoke(os.Args[2:]))
	case "functions":
		for _, n := range functions.Names() {
			fmt.Println(n)
		}
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "mfinit: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

func invoke(args []string) int {
	var env functions.Env
	if len(args) >= 2 && (args[0] == "--functions" || args[0] == "-functions") {
		env.FunctionsDir, args = args[1], args[2:]
	}
	if len(args) < 1 || len(args) > 2 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	raw := json.RawMessage("{}")
	if len(args) == 2 {
		raw = json.RawMessage(args[1])
		if !json.Valid(raw) {
			fmt.Fprintf(os.Stderr, "mfinit: ARGS_JSON is not valid JSON: %s\n", args[1])
			return 2
		}
	}
	start := time.Now()
	out, err := runtime.RunFunction(context.Background(), env, args[0], raw, runtime.DefaultJobTimeout)
	res := protocol.Result{Function: args[0], ExecMS: float64(time.Since(start).Microseconds()) / 1000, Result: out}
	if err != nil {
		res.Error = err.Error()
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	if err != nil {
		return 1
	}
	return 0
}

// asInit is PID 1. It must never return or panic: the kernel panics when
// init exits, so every failure ends in a clean power-off instead.
func asInit() {
	initMS := runtime.Uptime()
	// One console line, so the host can time the boot up to here.
	fmt.Fprintf(os.Stdout, "%s uptime_ms=%.0f\n", protocol.InitMarker, initMS)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	off := "poweroff"
	defer func() {
		if p := recover(); p != nil {
			log.Error("mfinit panicked; powering off", "panic", p)
		}
		if err := runtime.PowerOff(off); err != nil {
			log.Error("power off failed", "err", err)
		}
		select {}
	}()
	// The key first, before /run gets its tmpfs (which would hide the
	// file) and before anything else runs: read once, deleted.
	key, keyErr := runtime.TakeKey(protocol.KeyPath)
	if err := runtime.MountAll(); err != nil {
		log.Error("mounting filesystems", "err", err)
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		log.Error("reading kernel command line", "err", err)
		return
	}
	cfg, err := runtime.ParseCmdline(string(cmdline))
	if cfg.OffMode != "" {
		off = cfg.OffMode
	}
	// Debug images: a shell on the serial console; the board stays on until it ends.
	if debugshell.Requested(string(cmdline)) {
		sh := debugshell.Start(log)
		defer sh.Wait()
	}
	// A flasher SD card's worker writes the eMMC image instead (runtime/flash).
	if flash.Requested(string(cmdline)) {
		flash.Main(string(cmdline), os.Stdout)
		return
	}
	if cfg.Probe {
		fmt.Fprintf(os.Stdout, "%s uptime_ms=%.0f\n", runtime.ProbeMarker, initMS)
		return
	}
	if err != nil {
		log.Error("bad kernel command line", "err", err)
		return
	}
	var restored *restore
	if cfg.Snapshot {
		// A snapshot boot: everything a worker does before it needs to know
		// who it is happens now, so the snapshot holds it done.
		r, err := awaitRestore(cfg, log)
		if err != nil {
			log.Error("snapshot boot", "err", err)
			return
		}
		restored, cfg.ID, cfg.Orch, key, keyErr = &r, r.Identity.ID, r.Identity.Orch, r.Key, nil
	}
	if key == nil && keyErr == nil {
		// A board: its key is on the card it booted from.
		key, keyErr = runtime.CardKey(runtime.CardDevices)
	}
	if keyErr == nil && key == nil {
		keyErr = runtime.ErrNoKey
	}
	if keyErr != nil {
		log.Error("worker key", "err", keyErr)
		return
	}
	w := &runtime.Worker{Config: cfg, Key: key, Log: log, Env: functions.Env{FunctionsDir: "/functions"}, SetClock: runtime.SetWallClock}
	w.Boot.InitMS = initMS
	if restored != nil {
		w.Boot.NetworkMS, w.Boot.RestoredMS = restored.networkMS, restored.restoredMS
	} else {
		// The function sandbox's one-time set-up runs only on a worker that
		// has user functions (built-ins run in this process), and only once
		// its hello is out: on one vCPU it would otherwise compete with the
		// connection for the CPU.
		if len(functions.UserNames(w.Env.FunctionsDir)) > 0 {
			w.Connected = func() {
				if err := sandbox.Prepare(); err != nil {
					log.Error("function sandbox", "err", err)
				}
			}
		}
		if err := runtime.WaitLink(cfg.Iface, 10*time.Second); err != nil {
			log.Error("network", "err", err)
		}
		w.Boot.NetworkMS = runtime.Uptime()
	}
	out := w.Run(context.Background())
	log.Info("worker done", "action", out.Action, "reason", out.Reason,
		"init_ms", w.Boot.InitMS, "network_ms", w.Boot.NetworkMS, "connected_ms", w.Boot.ConnectedMS)
	if out.Action == protocol.CmdReboot {
		off = "reboot"
	}
}

// restore is what awaitRestore learned, with the boot milestones it passed.
type restore struct {
	runtime.Restored
	networkMS, restoredMS float64
}

// awaitRestore is a snapshot boot (mf.snapshot=1): it prepares the function
// sandbox and waits for the network, says it is ready (the host saves the
// VM here), then waits for the identity on the console. Everything after
// the identity line runs once per restore: the RNG is reseeded and the
// clock set before anything random or timed happens.
func awaitRestore(cfg runtime.Config, log *slog.Logger) (restore, error) {
	var r restore
	if err := sandbox.Prepare(); err != nil {
		log.Error("function sandbox", "err", err)
	}
	if err := runtime.WaitLink(cfg.Iface, 10*time.Second); err != nil {
		log.Error("network", "err", err)
	}
	r.networkMS = runtime.Uptime()
	// The identity carries the key: it must not echo into the console log.
	if err := runtime.ConsoleNoEcho(int(os.Stdin.Fd())); err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stdout, "%s uptime_ms=%.0f\n", protocol.SnapshotReadyMarker, r.networkMS)
	got, err := runtime.WaitIdentity(os.Stdin)
	if err != nil {
		return r, err
	}
	r.Restored, r.restoredMS = got, runtime.Uptime()
	// Never run on the snapshot's entropy: every restore has the same.
	if err := runtime.Reseed(got.Seed); err != nil {
		return r, err
	}
	if err := runtime.SetWallClock(time.Unix(0, got.Identity.NowUnixNS)); err != nil {
		log.Warn("could not set the wall clock from the identity", "err", err)
	}
	if err := bootparams.ValidID(got.Identity.ID); err != nil {
		return r, err
	}
	if err := bootparams.ValidOrch(got.Identity.Orch); err != nil {
		return r, err
	}
	return r, nil
}
