package kernel

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/target"
)

// realSource returns the Debian 6.1 tarball, or skips (fails in CI, where
// make deps installs it).
func realSource(t *testing.T) string {
	t.Helper()
	return realKernelSource(t).Path
}

// realKernelSource resolves the default recipe's source into the user's cache.
func realKernelSource(t *testing.T) Source {
	t.Helper()
	if testing.Short() {
		t.Skip("unpacks and configures a real kernel tree")
	}
	r, err := Lookup(filepath.Join(".."), DefaultVersion)
	if err != nil {
		t.Fatal(err)
	}
	src, err := Fetch(context.Background(), r, FetchOptions{Cache: cache.Cache{Dir: cache.DefaultDir()}})
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("kernel source: %v", err)
		}
		t.Skipf("kernel source: %v", err)
	}
	return src
}

// TestConfigureRealKernel runs the real kconfig of the 6.1 tree with our
// fragments, then with a symbol whose dependencies are absent, which kconfig
// drops: the build must fail naming it.
func TestConfigureRealKernel(t *testing.T) {
	src := realSource(t)
	tree := t.TempDir()
	ctx := context.Background()
	if err := Unpack(ctx, src, tree); err != nil {
		t.Fatal(err)
	}
	arch := ArchFor(target.X86)
	var frags []NamedFragment
	for _, f := range arch.Fragments {
		b, err := os.ReadFile(filepath.Join("..", "configs", "kernel", f))
		if err != nil {
			t.Fatal(err)
		}
		nf, err := ParseFragment(f, strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		frags = append(frags, NamedFragment{f, nf})
	}
	if err := Configure(ctx, tree, arch, frags, nil); err != nil {
		t.Fatalf("our own fragments do not survive olddefconfig: %v", err)
	}
	// DRM_I915 depends on PCI, which the microvm fragment leaves out.
	bad := append(frags, NamedFragment{"bad.config", Fragment{"CONFIG_DRM_I915": "y", "CONFIG_NO_SUCH_SYMBOL": "y"}})
	err := Configure(ctx, tree, arch, bad, nil)
	if !errors.Is(err, ErrDroppedSymbol) {
		t.Fatalf("err = %v, want ErrDroppedSymbol", err)
	}
	for _, s := range []string{"CONFIG_DRM_I915 (from bad.config)", "CONFIG_NO_SUCH_SYMBOL (from bad.config)"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not name %s:\n%v", s, err)
		}
	}
}
