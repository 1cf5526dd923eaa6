package kernel

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigureRealKernelARM runs the real kconfig of the 6.1 tree for the
// ARM worker: every symbol of common.config and armv7.config must survive
// olddefconfig (a driver whose dependency is missing would be dropped and the
// board would boot without it).
func TestConfigureRealKernelARM(t *testing.T) {
	src := realSource(t)
	tree := t.TempDir()
	ctx := context.Background()
	if err := Unpack(ctx, src, tree); err != nil {
		t.Fatal(err)
	}
	arch := Arches["arm"]
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
	frags = append(frags, initramfsFragment())
	if err := Configure(ctx, tree, arch, frags); err != nil {
		t.Fatalf("the ARM fragments do not survive olddefconfig: %v", err)
	}
	if keep := os.Getenv("MF_KEEP_CONFIG"); keep != "" {
		b, _ := os.ReadFile(filepath.Join(tree, ".config"))
		os.WriteFile(keep, b, 0o644)
	}
}
