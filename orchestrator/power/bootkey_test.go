package power

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
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

// A boot with a bundle carries it as one root-only file at its
// BundlePath, in an archive after the key's, with the directories
// KeyArchive makes.
func TestBootInitrdBundle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "boot")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(t.TempDir(), "initramfs.cpio")
	os.WriteFile(base, []byte("BASE-ARCHIVE"), 0o644)
	key := bytes.Repeat([]byte{0xab}, protocol.KeySize)
	data := []byte("a bundle of 27 bytes, odd.\n") // not a multiple of 4: the padding matters
	digest := "sha256:" + strings.Repeat("0123456789abcdef", 4)
	p, err := BootInitrd(dir, base, "vm0", key, BootBundle{Digest: digest, Size: int64(len(data)), R: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	keyArchive := protocol.KeyArchive(key)
	if !bytes.Equal(b[12:12+len(keyArchive)], keyArchive) {
		t.Fatal("the key's archive does not follow the worker's initramfs")
	}
	// The bundle's archive follows the key's.
	rest := b[12+len(keyArchive):]
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(rest)))
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		name string
		mode uint64
	}
	var got []entry
	var content []byte
	for _, rec := range recs {
		got = append(got, entry{rec.Name, rec.Mode})
		if rec.Name == strings.TrimPrefix(BundleDir, "/")+"/sha256-"+strings.Repeat("0123456789abcdef", 4) {
			content, _ = io.ReadAll(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize)))
		}
	}
	want := []entry{{"run", 0o040755}, {"run/bundles", 0o040700},
		{"run/bundles/sha256-" + strings.Repeat("0123456789abcdef", 4), 0o100400}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entries %v, want %v", got, want)
	}
	if !bytes.Equal(content, data) {
		t.Errorf("bundle file holds %q, want %q", content, data)
	}
	if int64(len(rest))%4 != 0 {
		t.Errorf("bundle archive of %d bytes: not padded to 4", len(rest))
	}
}

// A digest that is not sha256 and 64 hex digits never becomes a path;
// a short file fails the boot initramfs.
func TestBootInitrdBundleRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "boot")
	os.Mkdir(dir, 0o700)
	key := bytes.Repeat([]byte{0xab}, protocol.KeySize)
	for _, d := range []string{"sha256:../../etc/passwd", "sha512:" + strings.Repeat("ab", 32), "sha256:" + strings.Repeat("AB", 32), ""} {
		if _, err := BootInitrd(dir, "", "vm0", key, BootBundle{Digest: d, R: bytes.NewReader(nil)}); !errors.Is(err, ErrBadDigest) {
			t.Errorf("digest %q: err %v, want ErrBadDigest", d, err)
		}
	}
	ok := "sha256:" + strings.Repeat("ab", 32)
	if _, err := BootInitrd(dir, "", "vm0", key, BootBundle{Digest: ok, Size: 10, R: bytes.NewReader([]byte("short"))}); err == nil {
		t.Error("a bundle shorter than its size was accepted")
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("failed boots left %d files", len(left))
	}
}

// BenchmarkBootInitrdBundle is the per-boot cost of a 5 MB bundle: the
// boot initramfs written with it, from a file, over a 4 MB worker
// initramfs (ns/op minus BenchmarkBootInitrdNoBundle's is the bundle's).
func BenchmarkBootInitrdBundle(b *testing.B) { benchBootInitrd(b, 5<<20) }

func BenchmarkBootInitrdNoBundle(b *testing.B) { benchBootInitrd(b, 0) }

func benchBootInitrd(b *testing.B, bundleSize int) {
	tmp := b.TempDir()
	dir := filepath.Join(tmp, "boot")
	os.Mkdir(dir, 0o700)
	base := filepath.Join(tmp, "initramfs.cpio")
	os.WriteFile(base, bytes.Repeat([]byte{1}, 4<<20), 0o644)
	bundle := filepath.Join(tmp, "bundle")
	os.WriteFile(bundle, bytes.Repeat([]byte{2}, bundleSize), 0o600)
	key := bytes.Repeat([]byte{0xab}, protocol.KeySize)
	digest := "sha256:" + strings.Repeat("ab", 32)
	b.SetBytes(int64(bundleSize))
	for b.Loop() {
		var bundles []BootBundle
		f, err := os.Open(bundle)
		if err != nil {
			b.Fatal(err)
		}
		if bundleSize > 0 {
			bundles = append(bundles, BootBundle{Digest: digest, Size: int64(bundleSize), R: f})
		}
		p, err := BootInitrd(dir, base, "vm0", key, bundles...)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		os.Remove(p)
	}
}
