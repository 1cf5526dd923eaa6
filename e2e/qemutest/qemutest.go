// Package qemutest is the QEMU worker harness the tests share: an x86
// worker built once per run (with the test's own functions), and a real
// orchestrator serving QEMU workers on loopback. Tests of orchestrator/,
// orchestrator/openfaas and security/ boot workers through it.
package qemutest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/testlog"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/target"
)

// built is one worker per set of functions, built once per test binary.
var (
	mu    sync.Mutex
	built = map[string]*build{}
)

type build struct {
	once sync.Once
	dir  string
	img  builder.BootFiles
	err  error
}

// RemoveBuilt deletes the workers Worker built; a TestMain calls it after
// m.Run.
func RemoveBuilt() {
	mu.Lock()
	defer mu.Unlock()
	for _, b := range built {
		if b.dir != "" {
			os.RemoveAll(b.dir)
		}
	}
}

// Worker builds (or takes from the cache) the x86 worker with the given
// user functions (name -> Go package, relative to the repository) in its
// initramfs, once per run for each set. It skips with -short, and when no
// kernel for today's configs is cached (fatal under CI): a test never
// starts a kernel build, an hour of a shared machine, by itself.
func Worker(tb testing.TB, functions map[string]string) builder.BootFiles {
	tb.Helper()
	if testing.Short() {
		tb.Skip("builds a worker and boots QEMU")
	}
	if err := KernelCached(); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatal(err)
		}
		tb.Skip(err)
	}
	var key []string
	for name, pkg := range functions {
		key = append(key, name+"="+pkg)
	}
	sort.Strings(key)
	mu.Lock()
	b := built[strings.Join(key, ",")]
	if b == nil {
		b = &build{}
		built[strings.Join(key, ",")] = b
	}
	mu.Unlock()
	b.once.Do(func() { b.dir, b.img, b.err = buildWorker(functions) })
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.img
}

func buildWorker(functions map[string]string) (string, builder.BootFiles, error) {
	repo, err := builder.FindRepo(".")
	if err != nil {
		return "", builder.BootFiles{}, err
	}
	dir, err := os.MkdirTemp("", "mf-qemutest-")
	if err != nil {
		return "", builder.BootFiles{}, err
	}
	bins := map[string]string{}
	for name, pkg := range functions {
		bin := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			return dir, builder.BootFiles{}, fmt.Errorf("building the function %s from %s: %w\n%s", name, pkg, err, out)
		}
		bins[name] = bin
	}
	img, err := builder.BuildWorker(context.Background(), builder.Options{RepoDir: repo, Arch: target.X86,
		Cache: cache.Cache{Dir: cache.DefaultDir()}, Functions: bins}, filepath.Join(dir, "worker"))
	return dir, img, err
}

// KernelCached checks that an x86 worker kernel built from today's
// configs/kernel fragments is in the cache.
func KernelCached() error {
	repo, err := builder.FindRepo(".")
	if err != nil {
		return err
	}
	want := map[string]string{}
	for _, f := range []string{"common.config", "x86_64-microvm.config"} {
		b, err := os.ReadFile(filepath.Join(repo, "configs", "kernel", f))
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		want["fragment:"+f] = hex.EncodeToString(sum[:])
	}
	manifests, _ := filepath.Glob(filepath.Join(cache.DefaultDir(), "kernel", "*", "manifest.json"))
	for _, m := range manifests {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		var man struct {
			Arch   string            `json:"arch"`
			Inputs map[string]string `json:"inputs"`
		}
		if json.Unmarshal(b, &man) != nil || man.Arch != target.X86.Name {
			continue
		}
		ok := true
		for k, v := range want {
			ok = ok && man.Inputs[k] == v
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("no x86 worker kernel for today's configs/kernel fragments in %s yet (mfbuild kernel builds it)", cache.DefaultDir())
}

// Options say what Start runs.
type Options struct {
	Workers int               // QEMU workers in the cluster (cluster.Local)
	Worker  builder.BootFiles // from Worker
	Initrd  string            // replaces Worker.Initramfs when set
	// Cluster, when set, adjusts the cluster before anything starts (its
	// services, say); the orchestrator's port is already set.
	Cluster func(*cluster.Cluster)
	QEMU    power.QEMUConfig    // Boot, SnapshotDir, Failsafe...; the rest is filled in
	Config  orchestrator.Config // Cluster, Log and Controllers are filled in
}

// Cluster is a real orchestrator serving QEMU workers on loopback.
type Cluster struct {
	Orch    *orchestrator.Orchestrator
	QEMU    *power.QEMU
	Cluster *cluster.Cluster
	Logs    *testlog.Buffer // the orchestrator's and QEMU controller's log, at debug
}

// Start runs the cluster until the test ends; when the test failed, it
// logs the orchestrator's log and every worker's console.
func Start(tb testing.TB, o Options) *Cluster {
	tb.Helper()
	cl := cluster.Local(o.Workers)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cl.Network.Port = ln.Addr().(*net.TCPAddr).Port
	if o.Cluster != nil {
		o.Cluster(cl)
	}
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	qc := o.QEMU
	qc.Kernel, qc.Initrd, qc.Cluster, qc.Log = o.Worker.Kernel, o.Worker.Initramfs, cl, log
	if o.Initrd != "" {
		qc.Initrd = o.Initrd
	}
	if qc.LogDir == "" {
		qc.LogDir = tb.TempDir()
	}
	q, err := power.NewQEMU(context.Background(), qc)
	if err != nil {
		ln.Close()
		tb.Fatal(err)
	}
	cfg := o.Config
	cfg.Cluster, cfg.Log = cl, log
	cfg.Controllers = map[string]power.Controller{cluster.KindVM: q}
	orch, err := orchestrator.New(cfg)
	if err != nil {
		q.Close()
		ln.Close()
		tb.Fatal(err)
	}
	go orch.Serve(ln)
	tb.Cleanup(func() {
		orch.Close()
		q.Close()
		ln.Close()
		if tb.Failed() {
			tb.Logf("orchestrator log:\n%s", logs.String())
			for _, w := range cl.Workers {
				if b, err := os.ReadFile(q.LogPath(w.ID)); err == nil {
					tb.Logf("console of %s:\n%s", w.ID, b)
				}
			}
		}
	})
	return &Cluster{Orch: orch, QEMU: q, Cluster: cl, Logs: logs}
}

// Invoke runs a job and waits for it (3 minutes at most: TCG is slow).
func (c *Cluster) Invoke(tb testing.TB, spec orchestrator.JobSpec) *orchestrator.Invocation {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	inv, err := c.Orch.InvokeJob(ctx, spec)
	if err != nil {
		tb.Fatal(err)
	}
	return inv
}
