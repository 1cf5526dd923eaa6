// Package e2e holds the end-to-end checks: they boot the images mfbuild
// builds (builder) under the real orchestrator and its power controllers.
// mfbuild's qemu command and the QEMU tests use them; neither builder nor
// orchestrator imports this package.
package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/target"
)

// SmokeResult is what one smoke boot measured.
type SmokeResult struct {
	Accel      string             `json:"accel"`
	Digest     string             `json:"digest"`
	Boot       protocol.BootTimes `json:"boot"`
	ExecMS     float64            `json:"exec_ms"`
	WallMS     float64            `json:"wall_ms"` // power-on to result, on the host
	ExitedMS   float64            `json:"exited_ms"`
	ConsoleLog string             `json:"console_log"`
}

// SmokeInput is the smoke test's cascading_sha256 job.
const (
	SmokeData   = "MicroFaaS"
	SmokeRounds = 1000
)

// ExpectedSmokeDigest computes the smoke job's answer on the host, written
// independently of the worker's function.
func ExpectedSmokeDigest() string {
	// Each round hashes the previous round's binary digest, as the
	// original suite did; the answer is the last digest in hex.
	d := []byte(SmokeData)
	for i := 0; i < SmokeRounds; i++ {
		s := sha256.Sum256(d)
		d = s[:]
	}
	return hex.EncodeToString(d)
}

// Smoke boots the worker in QEMU with the real orchestrator in this process,
// runs cascading_sha256 on it, checks the digest and that the VM exited.
func Smoke(ctx context.Context, arch *target.Target, w builder.BootFiles, accel string, log *slog.Logger) (SmokeResult, error) {
	res, err := SmokeWith(ctx, arch, w, SmokeOptions{Accel: accel, Log: log})
	if len(res) == 0 {
		return SmokeResult{}, err
	}
	return res[0], err
}

// SmokeOptions are the settings of SmokeWith.
type SmokeOptions struct {
	Accel string       // as power.QEMUConfig.Accel
	Boot  string       // as power.QEMUConfig.Boot ("": full boot)
	Runs  int          // invocations in a row, each on a freshly booted worker (0: 1)
	Log   *slog.Logger // nil: slog.Default()
	// SnapshotDir is power.QEMUConfig.SnapshotDir for snapshot boots.
	SnapshotDir string
}

// SmokeWith is Smoke with options: it runs opts.Runs smoke invocations one
// after the other on one single-worker cluster; the worker powers off
// after each, so each runs on a fresh boot (or restore). It returns the
// results so far when one fails.
func SmokeWith(ctx context.Context, arch *target.Target, w builder.BootFiles, opts SmokeOptions) ([]SmokeResult, error) {
	log, accel := opts.Log, opts.Accel
	if opts.Runs <= 0 {
		opts.Runs = 1
	}
	if log == nil {
		log = slog.Default()
	}
	cl := cluster.Local(1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	cl.Network.Port = ln.Addr().(*net.TCPAddr).Port
	logDir, err := os.MkdirTemp("", "mfbuild-smoke-")
	if err != nil {
		return nil, err
	}
	initrd := w.Initramfs
	if arch.InitramfsLinked {
		initrd = "" // linked into the kernel image, as on the board
	}
	q, err := power.NewQEMU(ctx, power.QEMUConfig{Arch: arch, Kernel: w.Kernel, Initrd: initrd,
		Accel: accel, Cluster: cl, LogDir: logDir, Failsafe: 30, Log: log,
		Boot: opts.Boot, SnapshotDir: opts.SnapshotDir})
	if err != nil {
		return nil, err
	}
	defer q.Close()
	o, err := orchestrator.New(orchestrator.Config{Cluster: cl,
		Controllers: map[string]power.Controller{cluster.KindVM: q}, Log: log,
		PowerUpTimeout: 60 * time.Second, MaxAttempts: 1})
	if err != nil {
		return nil, err
	}
	defer o.Close()
	go o.Serve(ln)
	var all []SmokeResult
	for i := 0; i < opts.Runs; i++ {
		res, err := smokeRun(ctx, o, q)
		all = append(all, res)
		if err != nil {
			return all, err
		}
	}
	return all, nil
}

// smokeRun runs one smoke invocation and waits for the worker's VM to exit.
func smokeRun(ctx context.Context, o *orchestrator.Orchestrator, q *power.QEMU) (SmokeResult, error) {
	args, _ := json.Marshal(map[string]any{"data": SmokeData, "rounds": SmokeRounds})
	res := SmokeResult{Accel: q.Accel(), ConsoleLog: q.LogPath("vm0")}
	inv, err := o.Invoke(ctx, "cascading_sha256", args, 30*time.Second)
	if err != nil {
		return res, err
	}
	if inv.Err != nil {
		return res, fmt.Errorf("smoke invocation failed: %w (console: %s)", inv.Err, res.ConsoleLog)
	}
	if err := json.Unmarshal(inv.Result, &res.Digest); err != nil {
		return res, fmt.Errorf("smoke result %s: %w", inv.Result, err)
	}
	res.Boot, res.ExecMS = inv.Boot, inv.ExecMS
	res.WallMS = float64(inv.Finished.Sub(inv.PoweredOn).Microseconds()) / 1000
	if want := ExpectedSmokeDigest(); res.Digest != want {
		return res, fmt.Errorf("smoke digest %s, want %s", res.Digest, want)
	}
	deadline := time.Now().Add(20 * time.Second)
	for q.Running("vm0") {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("the worker VM did not exit after powering off (console: %s)", res.ConsoleLog)
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.ExitedMS = float64(time.Since(inv.PoweredOn).Microseconds()) / 1000
	return res, nil
}
