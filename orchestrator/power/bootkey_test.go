package power

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/microfaas/microfaas/protocol"
)

func TestBootInitrd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "boot")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(t.TempDir(), "initramfs.cpio")
	os.WriteFile(base, []byte("BASE-ARCHIVE"), 0o644) // 12 bytes: already aligned
	key := bytes.Repeat([]byte{0xab}, protocol.KeySize)
	p, err := BootInitrd(dir, base, "vm0", key)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("boot initramfs mode %o, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(p)
	if !bytes.HasPrefix(b, []byte("BASE-ARCHIVE")) {
		t.Fatalf("the worker's initramfs does not come first")
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b[12:])))
	if err != nil {
		t.Fatal(err)
	}
	last := recs[len(recs)-1]
	if "/"+last.Name != protocol.KeyPath || last.Mode&0o777 != 0o400 {
		t.Errorf("key entry %s mode %o", last.Name, last.Mode)
	}
	loose := t.TempDir()
	os.Chmod(loose, 0o755)
	if _, err := BootInitrd(loose, base, "vm0", key); err == nil {
		t.Error("a world-readable directory was accepted for keys")
	}
}
