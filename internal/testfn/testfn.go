// Package testfn holds helpers for tests: it builds user functions (the
// example wordcount binary, container images holding given files) and
// says whether a test's tools are there.
package testfn

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Wordcount compiles the example user function of the repository at repo
// for goarch.
func Wordcount(t testing.TB, repo, goarch string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "wordcount")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./examples/functions/wordcount")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build wordcount: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Image builds a one-layer image holding files, with entrypoint.
func Image(t testing.TB, arch string, files map[string][]byte, symlinks map[string]string, entrypoint ...string) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range sortedKeys(files) {
		tw.WriteHeader(&tar.Header{Name: p, Mode: 0o755, Size: int64(len(files[p])), Typeflag: tar.TypeReg})
		tw.Write(files[p])
	}
	for p, link := range symlinks {
		tw.WriteHeader(&tar.Header{Name: p, Linkname: link, Typeflag: tar.TypeSymlink})
	}
	tw.Close()
	layer, err := tarball.LayerFromReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Entrypoint = entrypoint
	cf.Config.Env = []string{"PATH=/app"}
	cf.Config.WorkingDir = "/app"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func sortedKeys(m map[string][]byte) []string {
	var k []string
	for p := range m {
		k = append(k, p)
	}
	sort.Strings(k)
	return k
}

// NeedARM skips (or, when CI is set, fails) a test that builds the ARM
// kernel and U-Boot and boots QEMU, when -short is given or a tool is missing.
func NeedARM(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the ARM kernel and U-Boot and boots QEMU")
	}
	for _, tool := range []string{"arm-linux-gnueabihf-gcc", "qemu-system-arm", "mkimage", "fdtget", "fsck.fat", "mdir"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s missing: make deps installs it", tool)
			}
			t.Skipf("%s missing (make deps)", tool)
		}
	}
}
