package builder

import (
	"testing"

	"github.com/microfaas/microfaas/target"
)

// Until kernel/ takes its facts from the target table, the two must agree:
// kernelArch is the one mapping between them.
func TestTargetsMatchKernelArches(t *testing.T) {
	for _, tg := range target.All {
		a, err := kernelArch(tg)
		if err != nil {
			t.Fatalf("%s: %v", tg, err)
		}
		if a.KArch != tg.KernelARCH || a.CrossCompile != tg.CrossCompile {
			t.Errorf("%s: kernel builds ARCH=%s CROSS_COMPILE=%q, target says %s %q", tg, a.KArch, a.CrossCompile, tg.KernelARCH, tg.CrossCompile)
		}
		found := false
		for _, o := range a.Outputs {
			found = found || o.Name == tg.KernelImage
		}
		if !found {
			t.Errorf("%s: kernel outputs %v lack the target's image %s", tg, a.Outputs, tg.KernelImage)
		}
	}
}
