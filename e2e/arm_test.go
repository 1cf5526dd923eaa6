package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/builder/image"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/testfn"
	"github.com/microfaas/microfaas/internal/testlog"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/runtime/flash"
	"github.com/microfaas/microfaas/target"
)

// needARM skips (or, in CI, fails) when the ARM build's inputs are missing.
func needARM(t *testing.T) { t.Helper(); testfn.NeedARM(t) }

func armOptions(t *testing.T) builder.Options {
	return builder.Options{RepoDir: repo(t), Arch: target.ARMv7, Cache: cache.Cache{Dir: cache.DefaultDir()}}
}

// buildBBB builds (or takes from the cache) the ARM worker and U-Boot.
func buildBBB(t *testing.T) builder.BBB {
	t.Helper()
	needARM(t)
	b, err := builder.BuildBBB(context.Background(), armOptions(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestQEMUSmokeARM boots the ARM worker's zImage (initramfs linked in, the
// very kernel of the BeagleBone images) on qemu-system-arm -M virt under TCG
// with the real orchestrator, runs cascading_sha256 and checks the digest.
func TestQEMUSmokeARM(t *testing.T) {
	needARM(t)
	w, err := builder.BuildWorker(context.Background(), armOptions(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res, err := Smoke(context.Background(), target.ARMv7, w, "tcg", nil)
	if err != nil {
		if b, rerr := os.ReadFile(res.ConsoleLog); rerr == nil {
			t.Logf("worker console:\n%s", b)
		}
		t.Fatal(err)
	}
	t.Logf("arm/%s: uptime at init %.0f ms, network %.0f ms, connected %.0f ms; power-on to result %.0f ms; exited %.0f ms",
		res.Accel, res.Boot.InitMS, res.Boot.NetworkMS, res.Boot.ConnectedMS, res.WallMS, res.ExitedMS)
	if res.Boot.InitMS <= 0 || res.Boot.ConnectedMS < res.Boot.InitMS {
		t.Errorf("implausible boot timings: %+v", res.Boot)
	}
}

// TestFlasherQEMU boots the flasher on qemu-system-arm -M virt with two
// virtio disks standing in for the SD card (the flasher image) and the eMMC
// (blank): the worker must copy partition 2's eMMC image to the blank disk,
// verify it, report and power off.
func TestFlasherQEMU(t *testing.T) {
	b := buildBBB(t)
	c, err := cluster.Load(filepath.Join(repo(t), "configs", "cluster.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sd := filepath.Join(dir, "flasher.img")
	info, err := builder.WriteImage(c, b.Boot, builder.ImageRequest{Medium: builder.MediumFlasher, Worker: "bbb5", Out: sd})
	if err != nil {
		t.Fatal(err)
	}
	img, _ := os.ReadFile(sd)
	bootargs, _ := image.DTBBootargs(info.DTB)
	params, err := bootparams.Parse(bootargs)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := flash.ConfigFrom(params)
	if err != nil {
		t.Fatal(err)
	}
	payload := img[info.Payload.Offset : info.Payload.Offset+cfg.Size]
	emmc := filepath.Join(dir, "emmc.img")
	if err := os.WriteFile(emmc, make([]byte, cfg.Size+1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// Under QEMU the SD card and eMMC are virtio disks. The virt machine
	// gives -device options its virtio-mmio transports from the highest
	// address down and Linux probes them from the lowest up, so the last
	// disk is vda: the eMMC (given second) is vda, the card vdb.
	cfg.Src, cfg.Dst = "/dev/vdb2", "/dev/vda"
	q, err := power.NewQEMU(context.Background(), power.QEMUConfig{Arch: target.ARMv7, Kernel: b.Worker.Kernel, Accel: "tcg", Cluster: c})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := c.Worker("bbb5")
	w.VM.Net = "user"
	cmdline, err := bootparams.Params{Kernel: []string{"console=ttyAMA0", "panic=-1"},
		Flash: &bootparams.Flash{Src: cfg.Src, Dst: cfg.Dst, Size: cfg.Size, SHA256: cfg.SHA256}}.Render()
	if err != nil {
		t.Fatal(err)
	}
	args := q.Args(w, cmdline)
	args = append(args,
		"-drive", "file="+sd+",format=raw,if=none,id=sd", "-device", "virtio-blk-device,drive=sd",
		"-drive", "file="+emmc+",format=raw,if=none,id=emmc", "-device", "virtio-blk-device,drive=emmc")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, "qemu-system-arm", args...).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(flash.OKMarker)) {
		t.Fatalf("flasher: %v (ctx %v)\n%s", err, ctx.Err(), out)
	}
	t.Logf("flasher wrote %d bytes and powered off %.1f s after power-on: %s", cfg.Size, time.Since(start).Seconds(),
		lineWith(out, flash.OKMarker))
	got, _ := os.ReadFile(emmc)
	if !bytes.Equal(got[:cfg.Size], payload) {
		t.Fatal("the eMMC disk does not hold the eMMC image")
	}
	if !errors.Is(ctx.Err(), nil) {
		t.Fatal(ctx.Err())
	}
}

func lineWith(out []byte, marker string) string {
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, marker) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// TestDebugShellQEMU boots a debug worker (mfbuild image --debug's kernel) on
// QEMU virt, types commands at the console shell and checks they run, and
// that the worker powers off only after the shell is left.
func TestDebugShellQEMU(t *testing.T) {
	needARM(t)
	o := armOptions(t)
	o.Debug = true
	w, err := builder.BuildWorker(context.Background(), o, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := cluster.Local(1)
	q, err := power.NewQEMU(context.Background(), power.QEMUConfig{Arch: target.ARMv7, Kernel: w.Kernel, Accel: "tcg", Cluster: c})
	if err != nil {
		t.Fatal(err)
	}
	vm := c.Workers[0]
	// No orchestrator listens on port 1: the worker gives up after its
	// 3-second failsafe, then waits for the shell.
	c.Network.Port = 1
	cmdline, err := q.Cmdline(vm)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The worker's key arrives as the controller sends it: a per-boot
	// archive after the kernel's own initramfs. Without a key the worker
	// would stop before its failsafe; the value does not matter here.
	keyDir := t.TempDir()
	os.Chmod(keyDir, 0o700)
	keyInitrd, err := power.BootInitrd(keyDir, "", vm.ID, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	args := append(q.Args(vm, cmdline+" "+bootparams.Failsafe+"=3 "+bootparams.Debug+"=1"), "-initrd", keyInitrd)
	cmd := exec.CommandContext(ctx, target.ARMv7.QEMU.Binary, args...)
	stdin, _ := cmd.StdinPipe()
	var out testlog.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline, _ := ctx.Deadline()
	waitFor := func(s string) {
		t.Helper()
		out.WaitFor(t, s, time.Until(deadline))
	}
	waitFor("debug shell on the console")
	time.Sleep(time.Second) // let the shell set up the terminal
	io.WriteString(stdin, "ls /bin\r")
	waitFor("hexdump")
	waitFor("worker done") // the failsafe ran out: the worker is done, the board still on
	time.Sleep(500 * time.Millisecond)
	if cmd.ProcessState != nil {
		t.Fatal("the worker powered off while the shell was open")
	}
	io.WriteString(stdin, "exit\r")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("qemu: %v\n%s", err, out.String())
	}
	if testing.Verbose() {
		t.Logf("console:\n%s", out.String())
	}
}
