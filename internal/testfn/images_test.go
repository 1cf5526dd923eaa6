package testfn_test

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/microfaas/microfaas/bundle"
	"github.com/microfaas/microfaas/bundle/oci"
	"github.com/microfaas/microfaas/internal/testfn"
)

// Each image becomes a bundle the way a deploy makes it (flatten, check,
// encode), its command is an ELF for the right machine, and a worker of
// the other machine is refused.
func TestImagesBuildBundles(t *testing.T) {
	tests := []struct {
		name     string
		img      func(t testing.TB) v1.Image
		arch     testfn.Arch
		watchdog bool
	}{
		{"of-watchdog amd64", func(t testing.TB) v1.Image { return testfn.OfWatchdogImage(t, testfn.AMD64) }, testfn.AMD64, true},
		{"of-watchdog arm/v7", func(t testing.TB) v1.Image { return testfn.OfWatchdogImage(t, testfn.ARMv7) }, testfn.ARMv7, true},
		{"classic watchdog", testfn.ClassicWatchdogImage, testfn.AMD64, true},
		{"python", testfn.PythonImage, testfn.AMD64, false},
		{"upper amd64", func(t testing.TB) v1.Image { return testfn.UpperImage(t, testfn.AMD64) }, testfn.AMD64, false},
		{"upper arm/v7", func(t testing.TB) v1.Image { return testfn.UpperImage(t, testfn.ARMv7) }, testfn.ARMv7, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := tt.img(t)
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if p := tt.arch.Platform(); cf.OS != p.OS || cf.Architecture != p.Architecture || cf.Variant != p.Variant {
				t.Errorf("config platform %s/%s/%s, want %s", cf.OS, cf.Architecture, cf.Variant, p)
			}
			var out bytes.Buffer
			cfg, err := oci.Build(img, tt.arch.Machine(), bundle.DefaultLimits, &out)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Watchdog() != tt.watchdog {
				t.Errorf("Watchdog() = %v for argv %q", cfg.Watchdog(), cfg.Argv())
			}
			tree, err := oci.Flatten(img, bundle.DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			p, ok := findCommand(tree, cfg)
			if !ok {
				t.Fatalf("command %s not in the image", cfg.Argv()[0])
			}
			f, err := elf.NewFile(bytes.NewReader(tree.Files[p].Data))
			if err != nil || f.Machine != tt.arch.Machine() {
				t.Fatalf("command %s: ELF %v (machine %v), want %v", p, err, f, tt.arch.Machine())
			}
			other := testfn.ARMv7.Machine()
			if tt.arch == testfn.ARMv7 {
				other = testfn.AMD64.Machine()
			}
			if _, err := oci.Build(img, other, bundle.DefaultLimits, &bytes.Buffer{}); !errors.Is(err, bundle.ErrCannotRun) {
				t.Errorf("bundle for %v: %v, want ErrCannotRun", other, err)
			}
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d entries, layer %d bytes gzipped, bundle %d bytes", len(tree.Files), m.Layers[0].Size, out.Len())
		})
	}
}

// findCommand finds the image's command in tree as a worker does: a path
// (relative ones from the working directory), or a bare name in the
// image's PATH.
func findCommand(tree *bundle.Tree, cfg bundle.Config) (string, bool) {
	cmd := cfg.Argv()[0]
	if path.IsAbs(cmd) {
		return tree.Resolve(cmd)
	}
	if strings.Contains(cmd, "/") {
		return tree.Resolve(path.Join("/", cfg.WorkingDir, cmd))
	}
	for _, kv := range cfg.Env {
		if dirs, ok := strings.CutPrefix(kv, "PATH="); ok {
			for _, d := range strings.Split(dirs, ":") {
				if p, ok := tree.Resolve(path.Join(d, cmd)); ok {
					return p, true
				}
			}
		}
	}
	return "", false
}

// The same inputs give the same image digest (no timestamps), so a
// redeploy of an unchanged image is recognised.
func TestImagesDeterministic(t *testing.T) {
	a, b := testfn.UpperImage(t, testfn.AMD64), testfn.UpperImage(t, testfn.AMD64)
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("digests differ: %s and %s", da, db)
	}
	files := []testfn.File{{Path: "/a/b", Data: []byte("x")}}
	c := testfn.BuildImage(t, testfn.AMD64, files, v1.Config{Entrypoint: []string{"/a/b"}})
	files[0].Data = []byte("y")
	d := testfn.BuildImage(t, testfn.AMD64, files, v1.Config{Entrypoint: []string{"/a/b"}})
	dc, _ := c.Digest()
	dd, _ := d.Digest()
	if dc == dd {
		t.Error("different contents, same digest")
	}
}

// The multi-platform index, pushed to the loopback registry, resolves to
// its amd64 and arm/v7 images.
func TestIndexThroughRegistry(t *testing.T) {
	host := testfn.Registry(t)
	ref := host + "/upper:1"
	idx := testfn.UpperIndex(t)
	digest := testfn.Push(t, ref, idx)
	if d, _ := idx.Digest(); d.String() != digest {
		t.Errorf("Push returned %s, index is %s", digest, d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want := []v1.Platform{testfn.AMD64.Platform(), testfn.ARMv7.Platform()}
	r := oci.Resolver{Insecure: []string{host}} // plain HTTP only where allowed
	got, err := r.Resolve(ctx, ref, want)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("resolved %d images, want 2", len(got))
	}
	for i, res := range got {
		cf, err := res.Image.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != want[i].Architecture || cf.Variant != want[i].Variant {
			t.Errorf("platform %s resolved to a %s/%s image", want[i], cf.Architecture, cf.Variant)
		}
	}
	// A platform the index lacks is named as missing.
	if _, err := r.Resolve(ctx, ref, []v1.Platform{{OS: "linux", Architecture: "riscv64"}}); !errors.Is(err, oci.ErrNoPlatform) {
		t.Errorf("riscv64: %v, want ErrNoPlatform", err)
	}
}

// The python image's few files are enough: its bundle, unpacked as a
// worker unpacks it, runs the script with the image's config in a chroot
// (needs root, as a worker's sandbox does).
func TestPythonImageRuns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root")
	}
	var b bytes.Buffer
	if _, err := oci.Build(testfn.PythonImage(t), elf.EM_X86_64, bundle.DefaultLimits, &b); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg, err := bundle.Unpack(&b, dir, bundle.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	argv := cfg.Argv()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Path = argv[0] // inside the chroot: no host PATH lookup
	cmd.Env, cmd.Dir = cfg.Env, "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: filepath.Join(dir, "rootfs")}
	cmd.Stdin = strings.NewReader("hello, wörld")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	if string(out) != "HELLO, WÖRLD\n" || stderr.Len() != 0 {
		t.Errorf("stdout %q stderr %q; want %q and nothing", out, stderr.String(), "HELLO, WÖRLD\n")
	}
}
