package builder

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/microfaas/microfaas/internal/cache"
)

func repo(t *testing.T) string {
	t.Helper()
	r, err := FindRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestInitramfsReproducible builds the real worker initramfs twice (mfinit
// compiled each time) and requires identical bytes.
func TestInitramfsReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles mfinit twice")
	}
	o := Options{RepoDir: repo(t), Arch: "x86"}
	dir := t.TempDir()
	a, err := Initramfs(context.Background(), o, filepath.Join(dir, "a.cpio"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Initramfs(context.Background(), o, filepath.Join(dir, "b.cpio"))
	if err != nil {
		t.Fatal(err)
	}
	if a.SHA256 != b.SHA256 || a.Init.SHA256 != b.Init.SHA256 {
		t.Fatalf("two builds differ: %s/%s vs %s/%s", a.SHA256, a.Init.SHA256, b.SHA256, b.Init.SHA256)
	}
	if a.Entries < 10 {
		t.Fatalf("only %d entries", a.Entries)
	}
}

func TestFindRepo(t *testing.T) {
	r := repo(t)
	if _, err := os.Stat(filepath.Join(r, "configs", "kernel", "common.config")); err != nil {
		t.Fatal(err)
	}
	if _, err := FindRepo(t.TempDir()); err != ErrNoRepo {
		t.Fatalf("outside the repo: err = %v", err)
	}
}

// worker builds (or takes from the cache) the x86 worker for QEMU tests.
// The first run builds the kernel (minutes); later runs hit the cache.
func worker(t *testing.T) Worker {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the worker kernel and boots QEMU")
	}
	o := Options{RepoDir: repo(t), Arch: "x86", Cache: cache.Cache{Dir: cache.DefaultDir()}}
	w, err := BuildWorker(context.Background(), o, t.TempDir())
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
	res, err := Smoke(context.Background(), "x86", w, "auto", nil)
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
