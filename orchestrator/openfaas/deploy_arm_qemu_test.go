package openfaas

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openfaas/faas-provider/types"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/bundle/oci"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/testfn"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/deploy"
	"github.com/microfaas/microfaas/orchestrator/power"
	mftarget "github.com/microfaas/microfaas/target"
)

// armMissing says what building and booting the ARM worker lacks, ""
// when nothing: the cross toolchain, mkimage and qemu-system-arm (make deps
// installs them) and the compiled ARM kernel tree in the cache (a test
// never starts a kernel build by itself; `mfbuild worker --arch arm`
// builds it once).
func armMissing() string {
	for _, tool := range []string{"arm-linux-gnueabihf-gcc", "mkimage", mftarget.ARMv7.QEMU.Binary} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " missing (make deps)"
		}
	}
	trees, _ := filepath.Glob(filepath.Join(cache.DefaultDir(), "kernel-tree", "*", "src", "arch",
		mftarget.ARMv7.KernelARCH, "boot", mftarget.ARMv7.KernelImage))
	if len(trees) == 0 {
		return "the ARM kernel tree is not in the cache (`mfbuild worker --arch arm` builds it once)"
	}
	return ""
}

// armWorker builds the ARM worker (zImage, the initramfs linked in) with
// internal/testfn's upper program baked in as "upper" (the baseline of
// BenchmarkDeployedColdCalls). With the ARM kernel tree cached that is a
// relink, and a second call with the same inputs a cache hit. It skips
// (fails under CI) when armMissing says something is missing.
func armWorker(tb testing.TB) builder.BootFiles {
	tb.Helper()
	if testing.Short() {
		tb.Skip("builds the ARM worker and boots QEMU")
	}
	if why := armMissing(); why != "" {
		if os.Getenv("CI") != "" {
			tb.Fatal(why)
		}
		tb.Skip(why)
	}
	repo, err := builder.FindRepo(".")
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	upper := filepath.Join(dir, "upper")
	if err := os.WriteFile(upper, testfn.GoBinary(tb, "upper", testfn.ARMv7), 0o755); err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	w, err := builder.BuildWorker(context.Background(), builder.Options{RepoDir: repo, Arch: mftarget.ARMv7,
		Cache: cache.Cache{Dir: cache.DefaultDir()}, Functions: map[string]string{"upper": upper}}, filepath.Join(dir, "arm"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Logf("ARM worker (upper baked in) ready in %s", time.Since(start).Round(time.Millisecond))
	return w
}

// bundleLog is the QEMU controller of a cluster of several architectures,
// noting which bundle each worker was powered on with.
type bundleLog struct {
	power.QEMUByArch
	mu        sync.Mutex
	delivered map[string][]string // worker id -> bundle digests, one per power-on with a bundle
	powerOns  map[string]int      // worker id -> power-ons
}

func (b *bundleLog) PowerOn(ctx context.Context, w cluster.Worker) error {
	b.mu.Lock()
	b.powerOns[w.ID]++
	b.mu.Unlock()
	return b.QEMUByArch.PowerOn(ctx, w)
}

func (b *bundleLog) PowerOnBundle(ctx context.Context, w cluster.Worker, bb power.BootBundle) error {
	b.mu.Lock()
	b.powerOns[w.ID]++
	b.delivered[w.ID] = append(b.delivered[w.ID], bb.Digest)
	b.mu.Unlock()
	return b.QEMUByArch.PowerOnBundle(ctx, w, bb)
}

func (b *bundleLog) counts() (map[string]int, map[string][]string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, d := map[string]int{}, map[string][]string{}
	for k, v := range b.powerOns {
		p[k] = v
	}
	for k, v := range b.delivered {
		d[k] = append([]string(nil), v...)
	}
	return p, d
}

// qemuCluster is a running orchestrator and provider over QEMU workers:
// x86 VMs booting x86w then ARM VMs booting armw, in that order, which is
// the order the orchestrator powers them on in.
type qemuCluster struct {
	*harness
	ctrl *bundleLog
	logs map[string]func() string // worker id -> its console so far
}

func newQEMUCluster(tb testing.TB, x86 int, x86w builder.BootFiles, arm int, armw builder.BootFiles, idle time.Duration, pcfg Config) *qemuCluster {
	tb.Helper()
	cl := cluster.Local(x86 + arm)
	for i := x86; i < x86+arm; i++ {
		cl.Workers[i].ID = fmt.Sprintf("arm%d", i-x86)
		cl.Workers[i].VM.Arch = mftarget.ARMv7.Name
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cl.Network.Port = ln.Addr().(*net.TCPAddr).Port
	logDir := tb.TempDir()
	ctrl := &bundleLog{QEMUByArch: power.QEMUByArch{}, delivered: map[string][]string{}, powerOns: map[string]int{}}
	c := &qemuCluster{ctrl: ctrl, logs: map[string]func() string{}}
	add := func(t *mftarget.Target, w builder.BootFiles) {
		// ARM under TCG always (no KVM for it on an x86 host).
		accel := "auto"
		if t == mftarget.ARMv7 {
			accel = "tcg"
		}
		initrd := w.Initramfs
		if t.InitramfsLinked { // in the zImage already
			initrd = ""
		}
		q, err := power.NewQEMU(context.Background(), power.QEMUConfig{Arch: t, Kernel: w.Kernel, Initrd: initrd,
			Accel: accel, Cluster: cl, LogDir: logDir, Failsafe: 120})
		if err != nil {
			tb.Fatal(err)
		}
		ctrl.QEMUByArch[t] = q
		tb.Logf("QEMU accelerator for %s: %s", t.Name, q.Accel())
	}
	if x86 > 0 {
		add(mftarget.X86, x86w)
	}
	if arm > 0 {
		add(mftarget.ARMv7, armw)
	}
	for _, w := range cl.Workers {
		q := ctrl.QEMUByArch[w.VM.Target()]
		id := w.ID
		c.logs[id] = func() string { b, _ := os.ReadFile(q.LogPath(id)); return string(b) }
	}
	tb.Cleanup(func() {
		ctrl.Close()
		if tb.Failed() {
			for id, console := range c.logs {
				tb.Logf("console of %s:\n%s", id, tail([]byte(console()), 6000))
			}
		}
	})
	ocfg := orchestrator.Config{IdleTimeout: idle, PowerUpTimeout: 2 * time.Minute}
	if pcfg.Deploys != nil {
		ocfg.Bundles = pcfg.Deploys
	}
	c.harness = start(tb, cl, ln, ctrl, ocfg, pcfg)
	return c
}

// TestQEMUDeployIndexMixed deploys a 2-platform index (internal/testfn's
// upper for linux/amd64 and linux/arm/v7) from a loopback registry through
// the provider on a cluster of one x86 and one ARM QEMU worker (the ARM
// one under TCG, the worker kernel of the BeagleBones): the deployment
// gets one bundle per architecture, and two calls at once boot both
// workers, each with the bundle of its own architecture in its boot, and
// each runs its own.
func TestQEMUDeployIndexMixed(t *testing.T) {
	host := testfn.Registry(t)
	ref := host + "/upper:multi"
	testfn.Push(t, ref, testfn.UpperIndex(t))
	store, err := deploy.New(deploy.Config{Dir: t.TempDir(), Resolver: &oci.Resolver{Insecure: []string{host}}})
	if err != nil {
		t.Fatal(err)
	}
	c := newQEMUCluster(t, 1, qemuWorker(t), 1, armWorker(t), 0, Config{Deploys: store, Archs: []string{mftarget.X86.Name, mftarget.ARMv7.Name}})
	c.deploy(types.FunctionDeployment{Service: "up", Image: ref})
	rec, ok := store.Get("up")
	if !ok {
		t.Fatal("no deployment record for up")
	}
	want := map[string]string{"vm0": mftarget.X86.Name, "arm0": mftarget.ARMv7.Name}
	digest := map[string]string{} // worker id -> the bundle of its arch
	for id, arch := range want {
		a, ok := rec.Archs[arch]
		if !ok {
			t.Fatalf("deployment %+v has no %s bundle", rec, arch)
		}
		digest[id] = a.Bundle.Digest
		t.Logf("%s: %s image %s, bundle %s (%d bytes)", arch, a.Platform, a.ImageDigest, a.Bundle.Digest, a.Bundle.Size)
	}
	if digest["vm0"] == digest["arm0"] {
		t.Fatalf("one bundle for both architectures: %s", digest["vm0"])
	}

	// Two calls at once with both workers off: the orchestrator powers on
	// vm0 for the first and arm0 for the second, and with no idle time a
	// worker powers off after one job, so each runs exactly one.
	type answer struct {
		status       int
		body, worker string
		took         time.Duration
	}
	inputs := []string{"first call\n", "second call\n"}
	answers := make(chan answer, len(inputs))
	for _, in := range inputs {
		go func() {
			t0 := time.Now()
			res, b := c.call("POST", "/function/up", in)
			answers <- answer{res.StatusCode, string(b), res.Header.Get(HeaderWorker), time.Since(t0)}
		}()
	}
	ran := map[string]string{} // worker id -> its answer
	for range inputs {
		a := <-answers
		if a.status != http.StatusOK {
			t.Fatalf("call on %q: %d %q", a.worker, a.status, a.body)
		}
		if _, ok := want[a.worker]; !ok || ran[a.worker] != "" {
			t.Fatalf("answer from worker %q (answers so far %q): want one from each of vm0 and arm0", a.worker, ran)
		}
		ran[a.worker] = a.body
		t.Logf("%s (%s): cold call answered %q in %s", a.worker, want[a.worker], a.body, a.took.Round(time.Millisecond))
	}
	got := []string{ran["vm0"], ran["arm0"]}
	if (got[0] != "FIRST CALL\n" || got[1] != "SECOND CALL\n") && (got[0] != "SECOND CALL\n" || got[1] != "FIRST CALL\n") {
		t.Fatalf("answers %q, want the inputs upper-cased, one per worker", got)
	}

	// Each worker was booted with its own architecture's bundle and
	// checked and ran that one (its console names the digest it unpacked).
	powerOns, delivered := c.ctrl.counts()
	for id := range want {
		if powerOns[id] != 1 || len(delivered[id]) != 1 || delivered[id][0] != digest[id] {
			t.Errorf("%s: %d power-ons with bundles %q, want one with %s", id, powerOns[id], delivered[id], digest[id])
		}
		console := c.logs[id]()
		for other, d := range digest {
			if has := strings.Contains(console, d); has != (other == id) {
				t.Errorf("console of %s names bundle %s (of %s): %v, want %v", id, d, other, has, other == id)
			}
		}
		for _, l := range strings.Split(console, "\n") {
			if strings.Contains(l, "bundle checked and unpacked") {
				t.Logf("%s: %s", id, strings.TrimSpace(l))
			}
		}
	}
}
