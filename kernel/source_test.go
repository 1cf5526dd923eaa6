package kernel

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"net/http"
	"net/http/httptest"

	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/source"
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

// TestFetchUpstream downloads an upstream recipe's tarball from a local
// server: the pinned hash is accepted and cached; a server that sends other
// bytes is refused with both hashes named.
func TestFetchUpstream(t *testing.T) {
	tarball := makeTarball(t, map[string]string{"Makefile": fakeMakefile})
	body, _ := os.ReadFile(tarball)
	good, _, err := cache.FileSHA256(tarball)
	if err != nil {
		t.Fatal(err)
	}
	serve := body
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(serve) }))
	defer srv.Close()
	r := Recipe{Name: "9.9", Path: "configs/kernel/9.9/recipe.yaml", Series: "9.9", Version: "9.9.9",
		Source: source.Pin{Upstream: &source.Upstream{URL: srv.URL + "/linux-9.9.9.tar.xz", SHA256: good}}}
	c := cache.Cache{Dir: t.TempDir()}
	src, err := Fetch(context.Background(), r, FetchOptions{Cache: c})
	if err != nil {
		t.Fatalf("intact tarball refused: %v", err)
	}
	if src.SHA256 != good || src.Series != "9.9" || !src.Pinned || src.Provenance["source.url"] == "" {
		t.Fatalf("source = %+v", src)
	}
	// Corrupt one byte in the middle, as a damaged download would.
	serve = append([]byte(nil), body...)
	serve[len(serve)/2] ^= 0xff
	_, err = Fetch(context.Background(), r, FetchOptions{Cache: cache.Cache{Dir: t.TempDir()}})
	var ce *ChecksumError
	if !errors.As(err, &ce) || !errors.Is(err, ErrChecksum) {
		t.Fatalf("err = %v, want a ChecksumError", err)
	}
	for _, want := range []string{"expected sha256 " + good, "actual   sha256 "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	// The first cache still serves the good file without the network.
	srv.Close()
	if _, err := Fetch(context.Background(), r, FetchOptions{Cache: c}); err != nil {
		t.Fatalf("cached source not reused offline: %v", err)
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

// TestRecipes reads the repository's recipe files: each is valid, the
// default and the 5.x series this machine builds are there, and names
// resolve by folder or exact version.
func TestRecipes(t *testing.T) {
	rs, err := LoadRecipes("..")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Recipe{}
	for _, r := range rs {
		byName[r.Name] = r
	}
	for name, built := range map[string]bool{"6.1": true, "5.10": true, "5.11": false} {
		r, ok := byName[name]
		if !ok {
			t.Fatalf("no recipe %s in configs/kernel", name)
		}
		if r.Built != built {
			t.Errorf("recipe %s: built = %v, want %v", name, r.Built, built)
		}
	}
	if r := byName["6.1"]; r.Source.Debian == nil || r.Source.Debian.Package != "linux-source-6.1" {
		t.Errorf("6.1 recipe source = %+v", r.Source)
	}
	if r, err := Lookup("..", "5.11.22"); err != nil || r.Name != "5.11" {
		t.Errorf("Lookup(5.11.22) = %+v, %v", r, err)
	}
	if _, err := Lookup("..", "4.0"); !errors.Is(err, ErrNoRecipe) || !strings.Contains(err.Error(), "--source") {
		t.Errorf("unknown recipe: %v", err)
	}
}

// TestReadRecipeRejects checks bad recipe files get errors that name them.
func TestReadRecipeRejects(t *testing.T) {
	sha := strings.Repeat("a", 64)
	for name, body := range map[string]string{
		"unknown field":   "series: \"9.9\"\nversion: 9.9.1\nsurce: {}\n",
		"series mismatch": "series: \"9.8\"\nversion: 9.9.1\nsource: {upstream: {url: http://x/y.tar.xz, sha256: " + sha + "}}\n",
		"no source":       "series: \"9.9\"\nversion: 9.9.1\n",
		"short hash":      "series: \"9.9\"\nversion: 9.9.1\nsource: {upstream: {url: http://x/y.tar.xz, sha256: abc}}\n",
		"bad absent":      "series: \"9.9\"\nversion: 9.9.1\nabsent: [GPIO_SIM]\nsource: {upstream: {url: http://x/y.tar.xz, sha256: " + sha + "}}\n",
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "9.9", "recipe.yaml")
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte(body), 0o644)
			if _, err := ReadRecipe(p); err == nil || !strings.Contains(err.Error(), p) {
				t.Fatalf("err = %v, want an error naming %s", err, p)
			}
		})
	}
}

// TestCheckAbsent: a symbol a recipe declares absent must not be defined by
// the tree's Kconfig files.
func TestCheckAbsent(t *testing.T) {
	tree := t.TempDir()
	os.MkdirAll(filepath.Join(tree, "drivers", "gpio"), 0o755)
	os.WriteFile(filepath.Join(tree, "drivers", "gpio", "Kconfig"), []byte("menuconfig GPIOLIB\n\tbool \"GPIO\"\nconfig GPIO_CDEV\n\tbool\n"), 0o644)
	if err := CheckAbsent(tree, []string{"CONFIG_GPIO_SIM"}); err != nil {
		t.Fatalf("a symbol the tree lacks: %v", err)
	}
	err := CheckAbsent(tree, []string{"CONFIG_GPIO_SIM", "CONFIG_GPIO_CDEV", "CONFIG_GPIOLIB"})
	if !errors.Is(err, ErrAbsentPresent) || !strings.Contains(err.Error(), "CONFIG_GPIO_CDEV (drivers/gpio/Kconfig)") || !strings.Contains(err.Error(), "CONFIG_GPIOLIB") {
		t.Fatalf("err = %v, want ErrAbsentPresent naming CONFIG_GPIO_CDEV and CONFIG_GPIOLIB", err)
	}
	two := []NamedFragment{{"common.config", Fragment{"CONFIG_NET": "y"}}, {"x86.config", Fragment{"CONFIG_ARCH_RANDOM": "y"}}}
	if got := named(two, []string{"CONFIG_ARCH_RANDOM", "CONFIG_GPIO_SIM"}); len(got) != 1 || got[0] != "CONFIG_ARCH_RANDOM" {
		t.Fatalf("named = %v: only symbols the fragments name are this build's inputs", got)
	}
	if got := named(two[:1], []string{"CONFIG_ARCH_RANDOM"}); len(got) != 0 {
		t.Fatalf("named = %v for fragments that do not name it", got)
	}
	frags := withoutAbsent([]NamedFragment{{"common.config", Fragment{"CONFIG_GPIO_SIM": "y", "CONFIG_NET": "y"}}}, []string{"CONFIG_GPIO_SIM"})
	if _, ok := frags[0].Fragment["CONFIG_GPIO_SIM"]; ok || frags[0].Fragment["CONFIG_NET"] != "y" {
		t.Fatalf("withoutAbsent = %+v", frags)
	}
}
