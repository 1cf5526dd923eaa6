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
	src := realKernelSource(t)
	tree := t.TempDir()
	ctx := context.Background()
	if err := Unpack(ctx, src.Path, tree); err != nil {
		t.Fatal(err)
	}
	arch := ArchFor(target.X86)
	// The fragments as a build reads them: the recipe's absent symbols out.
	o := Options{Arch: arch, Source: src, RepoDir: ".."}
	frags, _, err := o.inputs()
	if err != nil {
		t.Fatal(err)
	}
	if err := Configure(ctx, tree, arch, frags, src.Absent); err != nil {
		t.Fatalf("our own fragments do not survive olddefconfig: %v", err)
	}
	// A recipe may not call a symbol absent that the tree defines.
	if err := Configure(ctx, tree, arch, frags, []string{"CONFIG_NET"}); !errors.Is(err, ErrAbsentPresent) {
		t.Fatalf("CONFIG_NET declared absent: err = %v, want ErrAbsentPresent", err)
	}
	// DRM_I915 depends on PCI, which the microvm fragment leaves out.
	bad := append(frags, NamedFragment{"bad.config", Fragment{"CONFIG_DRM_I915": "y", "CONFIG_NO_SUCH_SYMBOL": "y"}})
	err = Configure(ctx, tree, arch, bad, nil)
	if !errors.Is(err, ErrDroppedSymbol) {
		t.Fatalf("err = %v, want ErrDroppedSymbol", err)
	}
	for _, s := range []string{"CONFIG_DRM_I915 (from bad.config)", "CONFIG_NO_SUCH_SYMBOL (from bad.config)"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not name %s:\n%v", s, err)
		}
	}
}
