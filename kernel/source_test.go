package kernel

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/internal/cache"
)

// makeTarball writes a tiny kernel-like source tree and packs it.
func makeTarball(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	top := filepath.Join(dir, "linux-9.9.9")
	for name, body := range files {
		p := filepath.Join(top, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tarball := filepath.Join(dir, "linux-9.9.9.tar.xz")
	if out, err := exec.Command("tar", "-cJf", tarball, "-C", dir, "linux-9.9.9").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	return tarball
}

const fakeMakefile = "VERSION = 9\nPATCHLEVEL = 9\nSUBLEVEL = 9\n"

func TestFetchCorruptTarball(t *testing.T) {
	tarball := makeTarball(t, map[string]string{"Makefile": fakeMakefile})
	good, _, err := cache.FileSHA256(tarball)
	if err != nil {
		t.Fatal(err)
	}
	r := Recipe{Version: "9.9.9", Series: "9.9", Local: tarball, SHA256: good, Hint: "test hint"}
	if _, err := Fetch(context.Background(), r, cache.Cache{Dir: t.TempDir()}); err != nil {
		t.Fatalf("intact tarball refused: %v", err)
	}
	// Corrupt one byte in the middle, as a truncated or damaged download would.
	b, _ := os.ReadFile(tarball)
	b[len(b)/2] ^= 0xff
	os.WriteFile(tarball, b, 0o644)
	_, err = Fetch(context.Background(), r, cache.Cache{Dir: t.TempDir()})
	var ce *ChecksumError
	if !errors.As(err, &ce) || !errors.Is(err, ErrChecksum) {
		t.Fatalf("err = %v, want a ChecksumError", err)
	}
	for _, want := range []string{tarball, "expected sha256 " + good, "actual   sha256 ", "test hint"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
}

func TestFetchMissingSource(t *testing.T) {
	r := Recipe{Version: "9.9.9", Local: "/nonexistent/linux.tar.xz", SHA256: "00", Hint: "install the package"}
	_, err := Fetch(context.Background(), r, cache.Cache{Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "install the package") {
		t.Fatalf("err = %v, want the recipe's hint", err)
	}
}

func TestLocalSourceReadsVersion(t *testing.T) {
	tarball := makeTarball(t, map[string]string{"Makefile": fakeMakefile})
	src, err := LocalSource(tarball, "")
	if err != nil {
		t.Fatal(err)
	}
	if src.Series != "9.9" || src.Pinned {
		t.Fatalf("source = %+v, want series 9.9, not pinned", src)
	}
	if _, err := LocalSource(tarball, strings.Repeat("0", 64)); !errors.Is(err, ErrChecksum) {
		t.Fatalf("wrong --sha256 accepted: %v", err)
	}
	notKernel := makeTarball(t, map[string]string{"README": "hi"})
	if _, err := LocalSource(notKernel, ""); err == nil || !strings.Contains(err.Error(), "Makefile") {
		t.Fatalf("non-kernel tarball: err = %v", err)
	}
}

func TestApplyPatches(t *testing.T) {
	tree := t.TempDir()
	os.WriteFile(filepath.Join(tree, "hello.c"), []byte("int a;\nint b;\nint c;\n"), 0o644)
	pdir := t.TempDir()
	good := "--- a/hello.c\n+++ b/hello.c\n@@ -1,3 +1,3 @@\n int a;\n-int b;\n+int bb;\n int c;\n"
	bad := "--- a/hello.c\n+++ b/hello.c\n@@ -1,3 +1,3 @@\n int a;\n-int x;\n+int y;\n int c;\n"
	os.WriteFile(filepath.Join(pdir, "0001-good.patch"), []byte(good), 0o644)
	os.WriteFile(filepath.Join(pdir, "0002-bad.patch"), []byte(bad), 0o644)
	os.WriteFile(filepath.Join(pdir, "README"), []byte("not a patch"), 0o644)
	patches, err := SeriesPatches(pdir)
	if err != nil || len(patches) != 2 {
		t.Fatalf("SeriesPatches = %v, %v", patches, err)
	}
	err = ApplyPatches(tree, patches)
	if !errors.Is(err, ErrPatch) || !strings.Contains(err.Error(), "0002-bad.patch") {
		t.Fatalf("err = %v, want ErrPatch naming 0002-bad.patch", err)
	}
	b, _ := os.ReadFile(filepath.Join(tree, "hello.c"))
	if !strings.Contains(string(b), "int bb;") {
		t.Fatalf("the good patch was not applied first:\n%s", b)
	}
	if none, err := SeriesPatches(filepath.Join(pdir, "missing")); err != nil || none != nil {
		t.Fatalf("a missing series folder should be empty: %v %v", none, err)
	}
}

func TestRecipes(t *testing.T) {
	for name, r := range Recipes {
		if len(r.SHA256) != 64 {
			t.Errorf("recipe %s: SHA-256 %q is not pinned", name, r.SHA256)
		}
		if r.URL == "" && r.Local == "" {
			t.Errorf("recipe %s: no source", name)
		}
		if SeriesOf(r.Version) != r.Series {
			t.Errorf("recipe %s: series %s does not match version %s", name, r.Series, r.Version)
		}
	}
	if _, err := Lookup("4.0"); err == nil || !strings.Contains(err.Error(), "--source") {
		t.Errorf("unknown recipe: %v", err)
	}
}
