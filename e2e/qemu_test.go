package e2e

import (
	"context"
	"os"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/testfn"
	"github.com/microfaas/microfaas/target"
)

func repo(t *testing.T) string {
	t.Helper()
	r, err := builder.FindRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// worker builds (or takes from the cache) the x86 worker for QEMU tests.
// The first run builds the kernel (minutes); later runs hit the cache.
func worker(t *testing.T) builder.Worker {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the worker kernel and boots QEMU")
	}
	o := builder.Options{RepoDir: repo(t), Arch: target.X86, Cache: cache.Cache{Dir: cache.DefaultDir()}}
	w, err := builder.BuildWorker(context.Background(), o, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestQEMUSmoke boots the built bzImage and initramfs in a QEMU microvm with
// the real orchestrator in this process, runs cascading_sha256 and checks the
// digest and that the VM exited.
func TestQEMUSmoke(t *testing.T) {
	w := worker(t)
	res, err := Smoke(context.Background(), target.X86, w, "auto", nil)
	if err != nil {
		if b, rerr := os.ReadFile(res.ConsoleLog); rerr == nil {
			t.Logf("worker console:\n%s", b)
		}
		t.Fatal(err)
	}
	t.Logf("accel %s: uptime at init %.0f ms, network %.0f ms, connected %.0f ms; power-on to result %.0f ms",
		res.Accel, res.Boot.InitMS, res.Boot.NetworkMS, res.Boot.ConnectedMS, res.WallMS)
	if res.Boot.InitMS <= 0 || res.Boot.ConnectedMS < res.Boot.InitMS {
		t.Errorf("implausible boot timings: %+v", res.Boot)
	}
}

// BenchmarkQEMUBoot measures power-on to result for one cold QEMU worker.
func BenchmarkQEMUBoot(b *testing.B) {
	o := builder.Options{RepoDir: ".", Arch: target.X86, Cache: cache.Cache{Dir: cache.DefaultDir()}}
	r, err := builder.FindRepo(".")
	if err != nil {
		b.Fatal(err)
	}
	o.RepoDir = r
	w, err := builder.BuildWorker(context.Background(), o, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	var init, conn, wall float64
	for i := 0; i < b.N; i++ {
		res, err := Smoke(context.Background(), target.X86, w, "auto", nil)
		if err != nil {
			b.Fatal(err)
		}
		init += res.Boot.InitMS
		conn += res.Boot.ConnectedMS
		wall += res.WallMS
	}
	n := float64(b.N)
	b.ReportMetric(init/n, "init-ms")
	b.ReportMetric(conn/n, "connected-ms")
	b.ReportMetric(wall/n, "poweron-to-result-ms")
}

func buildWordcount(t *testing.T, goarch string) []byte {
	return testfn.Wordcount(t, repo(t), goarch)
}

func makeImage(t *testing.T, arch string, files map[string][]byte, symlinks map[string]string, entrypoint ...string) v1.Image {
	return testfn.Image(t, arch, files, symlinks, entrypoint...)
}
