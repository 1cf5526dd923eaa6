package kernel

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/target"
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
	arch := ArchFor(target.ARMv7)
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
	if err := Configure(ctx, tree, arch, frags, nil); err != nil {
		t.Fatalf("the ARM fragments do not survive olddefconfig: %v", err)
	}
	if keep := os.Getenv("MF_KEEP_CONFIG"); keep != "" {
		b, _ := os.ReadFile(filepath.Join(tree, ".config"))
		os.WriteFile(keep, b, 0o644)
	}
}

// TestRelinkReproducible relinks the compiled ARM tree with archive A, then
// B, then A again: A's two kernels must be byte-identical (relinking depends
// only on the archive, not on what was linked before) and differ from B's.
func TestRelinkReproducible(t *testing.T) {
	source := realKernelSource(t)
	if _, err := exec.LookPath(target.ARMv7.CrossCompile + "gcc"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ctx := context.Background()
	o := Options{Arch: ArchFor(target.ARMv7), Source: source, RepoDir: filepath.Join("..")}
	o.Cache = cache.Cache{Dir: cache.DefaultDir()}
	o.Log = slog.Default()
	o.Jobs = 2
	frags, h, err := o.inputs()
	if err != nil {
		t.Fatal(err)
	}
	frags = append(frags, initramfsFragment())
	h.Add("tree.revision", treeRevision)
	treeKey := h.Key()
	unlock, err := o.Cache.Lock("kernel-tree", treeKey)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	tree, _, _, err := o.compiledTree(ctx, treeKey, frags)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var images [][]byte
	for i, content := range []string{"A", "B", "A"} {
		cpioPath := filepath.Join(dir, fmt.Sprintf("%d.cpio", i))
		var b bytes.Buffer
		w := cpio.Newc.Writer(&b)
		if err := w.WriteRecord(cpio.StaticFile("hello", strings.Repeat(content, 5000), 0o644)); err != nil {
			t.Fatal(err)
		}
		cpio.WriteTrailer(w)
		os.WriteFile(cpioPath, b.Bytes(), 0o644)
		if err := o.relink(ctx, tree, cpioPath, filepath.Join(dir, "log")); err != nil {
			t.Fatal(err)
		}
		z, err := os.ReadFile(filepath.Join(tree, "arch/arm/boot/zImage"))
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, z)
	}
	if !bytes.Equal(images[0], images[2]) {
		t.Fatal("relinking with the same archive gave a different zImage")
	}
	if bytes.Equal(images[0], images[1]) {
		t.Fatal("relinking with another archive gave the same zImage: the initramfs was not linked in")
	}
}

// TestX86KeyInputsUnchanged guards the x86 kernel's cache key: the ARM
// additions (linked-in initramfs, derived outputs, compiled trees) must not
// add inputs to it, or every machine would rebuild its x86 kernel.
func TestX86KeyInputsUnchanged(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc: the key includes the toolchain")
	}
	o := Options{Arch: ArchFor(target.X86), Source: Source{SHA256: "0", Series: "6.1"}, RepoDir: ".."}
	_, h, err := o.inputs()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"revision": true, "arch": true, "base": true, "targets": true, "source.sha256": true,
		"fragment:common.config": true, "fragment:x86_64-microvm.config": true, "fragment.order": true,
		"patch.order": true, "toolchain": true}
	for name := range h.Inputs() {
		if !want[name] && !strings.HasPrefix(name, "patch:") {
			t.Errorf("x86 kernel key has a new input %q", name)
		}
	}
	if h.Inputs()["revision"] != "kernel-build-1" {
		t.Errorf("recipe revision changed to %q: every x86 kernel would be rebuilt", h.Inputs()["revision"])
	}
}
