package e2e

import (
	"context"
	"os"
	"testing"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/target"
)

// TestKernel510Boots builds the 5.10 series (Debian bullseye's
// linux-source-5.10, patches/linux/5.10) for x86 and ARM with this
// machine's toolchain, boots each under QEMU with the real orchestrator and
// runs the smoke job. make test builds both kernels before the test
// packages, so this takes them from the cache.
func TestKernel510Boots(t *testing.T) {
	for _, arch := range target.All {
		t.Run(arch.Name, func(t *testing.T) {
			if testing.Short() {
				t.Skip("builds the 5.10 worker kernel and boots QEMU")
			}
			if arch == target.ARMv7 {
				needARM(t)
			}
			o := builder.Options{RepoDir: repo(t), Arch: arch, Version: "5.10", Cache: cache.Cache{Dir: cache.DefaultDir()}}
			w, err := builder.BuildWorker(context.Background(), o, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if v := w.KernelInfo.Manifest.Version; v != "5.10.223" {
				t.Errorf("built linux %s, want 5.10.223 (configs/kernel/5.10/recipe.yaml)", v)
			}
			res, err := Smoke(context.Background(), arch, w, "auto", nil)
			if err != nil {
				if b, rerr := os.ReadFile(res.ConsoleLog); rerr == nil {
					t.Logf("worker console:\n%s", b)
				}
				t.Fatal(err)
			}
			t.Logf("linux %s %s, accel %s: uptime at init %.0f ms, connected %.0f ms; power-on to result %.0f ms",
				w.KernelInfo.Manifest.Version, arch, res.Accel, res.Boot.InitMS, res.Boot.ConnectedMS, res.WallMS)
		})
	}
}
