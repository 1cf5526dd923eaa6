package builder

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/microfaas/microfaas/target"
)

func repo(t *testing.T) string {
	t.Helper()
	r, err := FindRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestInitramfsReproducible builds the real worker initramfs twice (mfinit
// compiled each time) and requires identical bytes.
func TestInitramfsReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles mfinit twice")
	}
	o := Options{RepoDir: repo(t), Arch: target.X86}
	dir := t.TempDir()
	a, err := Initramfs(context.Background(), o, filepath.Join(dir, "a.cpio"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Initramfs(context.Background(), o, filepath.Join(dir, "b.cpio"))
	if err != nil {
		t.Fatal(err)
	}
	if a.SHA256 != b.SHA256 || a.Init.SHA256 != b.Init.SHA256 {
		t.Fatalf("two builds differ: %s/%s vs %s/%s", a.SHA256, a.Init.SHA256, b.SHA256, b.Init.SHA256)
	}
	if a.Entries < 10 {
		t.Fatalf("only %d entries", a.Entries)
	}
}

func TestFindRepo(t *testing.T) {
	r := repo(t)
	if _, err := os.Stat(filepath.Join(r, "configs", "kernel", "common.config")); err != nil {
		t.Fatal(err)
	}
	if _, err := FindRepo(t.TempDir()); err != ErrNoRepo {
		t.Fatalf("outside the repo: err = %v", err)
	}
}
