package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/e2e"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/lab/rig"
	"github.com/microfaas/microfaas/target"
)

// armKernelReady reports whether the cache holds a compiled ARM kernel tree,
// so building the ARM worker is a relink, not a kernel build.
func armKernelReady() bool {
	m, _ := filepath.Glob(filepath.Join(cache.DefaultDir(), "kernel-tree", "*", "src", "arch", target.ARMv7.KernelARCH, "boot", target.ARMv7.KernelImage))
	return len(m) > 0
}

// TestARMQEMUWorker runs mforch's own start-up (lab/rig) with a cluster file whose VM
// worker has vm.arch arm: the orchestrator boots the ARM worker kernel on
// qemu-system-arm -M virt and runs a job on it.
func TestARMQEMUWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("boots an ARM QEMU worker")
	}
	need := func(format string, a ...any) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatalf(format, a...)
		}
		t.Skipf(format, a...)
	}
	if _, err := exec.LookPath(target.ARMv7.QEMU.Binary); err != nil {
		need("%s missing (make deps)", target.ARMv7.QEMU.Binary)
	}
	if !armKernelReady() {
		need("the ARM worker kernel is not in the cache yet: build it once with `mfbuild worker --arch arm` (make test does)")
	}
	repo, err := builder.FindRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w, err := builder.BuildWorker(context.Background(),
		builder.Options{RepoDir: repo, Arch: target.ARMv7, Cache: cache.Cache{Dir: cache.DefaultDir()}}, filepath.Join(dir, target.ARMv7.Name))
	if err != nil {
		t.Fatal(err)
	}
	// User networking: the worker dials 10.0.2.2:PORT, which QEMU maps to
	// the host's 127.0.0.1:PORT.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	clusterFile := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(clusterFile, []byte(fmt.Sprintf(`
network: {subnet: 10.0.2.0/24, gateway: 10.0.2.2, orchestrator: 10.0.2.2, port: %d, listen: 127.0.0.1}
secret: 000102030405060708090a0b0c0d0e0f
workers:
  - {id: arm0, kind: vm, ip: 10.0.2.15, vm: {arch: arm}}
`, port)), 0o644)
	cl, err := cluster.Load(clusterFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := rig.Config{Cluster: cl, ARMKernel: w.Kernel, Kernel: filepath.Join(dir, "no-x86-kernel"),
		Accel: "tcg", Results: filepath.Join(dir, "results.csv"), ConsoleDir: dir,
		PowerUpTimeout: 2 * time.Minute, MaxAttempts: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := rig.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	args, _ := json.Marshal(map[string]any{"data": e2e.SmokeData, "rounds": e2e.SmokeRounds})
	inv, err := r.Orch.Invoke(ctx, "cascading_sha256", args, 2*time.Minute)
	console, _ := os.ReadFile(filepath.Join(dir, "worker-arm0.log"))
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, console)
	}
	if inv.Err != nil {
		t.Fatalf("invocation: %v\nconsole:\n%s", inv.Err, console)
	}
	var digest string
	if err := json.Unmarshal(inv.Result, &digest); err != nil || digest != e2e.ExpectedSmokeDigest() {
		t.Fatalf("result %s (%v), want %q", inv.Result, err, e2e.ExpectedSmokeDigest())
	}
	t.Logf("ARM QEMU worker via mforch: power-on to result %.0f ms (TCG)", float64(inv.Finished.Sub(inv.PoweredOn).Milliseconds()))
}
