package power

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/microfaas/microfaas/bundle"
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

// testBundle is a real bundle (bundle.Encode) of an odd size, so the
// padding matters, and its digest.
func testBundle(t testing.TB, size int) ([]byte, string) {
	t.Helper()
	tree := &bundle.Tree{Files: map[string]bundle.Entry{
		"bin/fn":  {Type: tar.TypeReg, Mode: 0o755, Data: bytes.Repeat([]byte{2}, size)},
		"lib":     {Type: tar.TypeDir, Mode: 0o555},
		"lib/so":  {Type: tar.TypeReg, Mode: 0o644, Data: []byte("odd")},
		"lib64":   {Type: tar.TypeSymlink, Target: "lib"},
		"tmp":     {Type: tar.TypeDir, Mode: 0o1777},
		"etc/cfg": {Type: tar.TypeReg, Mode: 0o600, Data: []byte("x=1\n")},
	}}
	var b bytes.Buffer
	if err := bundle.Encode(&b, tree, bundle.Config{Entrypoint: []string{"/bin/fn"}}); err != nil {
		t.Fatal(err)
	}
	digest, err := bundle.Digest(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), digest
}

// A boot with a bundle carries it in an archive after the key's: the
// directories BundleDir and BundlePath (root-only), then the bundle's own
// records renamed below BundlePath, owned by root, for the kernel to
// unpack.
func TestBootInitrdBundle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "boot")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(t.TempDir(), "initramfs.cpio")
	os.WriteFile(base, []byte("BASE-ARCHIVE"), 0o644)
	key := bytes.Repeat([]byte{0xab}, protocol.KeySize)
	data, digest := testBundle(t, 27)
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
	orig, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	at, _ := BundlePath(digest)
	at = strings.TrimPrefix(at, "/")
	if at != "bundles/"+strings.TrimPrefix(digest, "sha256:") {
		t.Fatalf("BundlePath %s", at)
	}
	type entry struct {
		name     string
		mode     uint64
		uid, gid uint64
		data     string
	}
	read := func(r cpio.Record) entry {
		content, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		return entry{r.Name, r.Mode, r.UID, r.GID, string(content)}
	}
	var got, want []entry
	for _, r := range recs {
		got = append(got, read(r))
	}
	want = []entry{{"bundles", 0o040700, 0, 0, ""}, {at, 0o040700, 0, 0, ""}}
	for _, r := range orig {
		e := read(r)
		e.name = at + "/" + e.name
		want = append(want, e)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entries\n%v\nwant\n%v", got, want)
	}
	if int64(len(rest))%4 != 0 {
		t.Errorf("bundle archive of %d bytes: not padded to 4", len(rest))
	}
}

// A digest that is not sha256 and 64 hex digits never becomes a path; a
// bundle that is not its size, or no bundle, fails the boot initramfs.
func TestBootInitrdBundleRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "boot")
	os.Mkdir(dir, 0o700)
	key := bytes.Repeat([]byte{0xab}, protocol.KeySize)
	for _, d := range []string{"sha256:../../etc/passwd", "sha512:" + strings.Repeat("ab", 32), "sha256:" + strings.Repeat("AB", 32), ""} {
		if _, err := BootInitrd(dir, "", "vm0", key, BootBundle{Digest: d, R: bytes.NewReader(nil)}); !errors.Is(err, ErrBadDigest) {
			t.Errorf("digest %q: err %v, want ErrBadDigest", d, err)
		}
	}
	data, digest := testBundle(t, 100)
	for _, tt := range []struct {
		name string
		b    BootBundle
		want error
	}{
		{"shorter than its size", BootBundle{Digest: digest, Size: int64(len(data)) + 10, R: bytes.NewReader(data)}, bundle.ErrUnsafeImage},
		{"longer than its size", BootBundle{Digest: digest, Size: int64(len(data)) - 4, R: bytes.NewReader(data)}, bundle.ErrUnsafeImage},
		{"not a bundle", BootBundle{Digest: digest, Size: 200, R: bytes.NewReader(bytes.Repeat([]byte("x"), 200))}, bundle.ErrUnsafeImage},
	} {
		if _, err := BootInitrd(dir, "", "vm0", key, tt.b); !errors.Is(err, tt.want) {
			t.Errorf("a bundle %s: %v, want %v", tt.name, err, tt.want)
		}
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
	data, digest := testBundle(b, bundleSize)
	bundle := filepath.Join(tmp, "bundle")
	os.WriteFile(bundle, data, 0o600)
	key := bytes.Repeat([]byte{0xab}, protocol.KeySize)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var bundles []BootBundle
		f, err := os.Open(bundle)
		if err != nil {
			b.Fatal(err)
		}
		if bundleSize > 0 {
			bundles = append(bundles, BootBundle{Digest: digest, Size: int64(len(data)), R: f})
		}
		p, err := BootInitrd(dir, base, "vm0", key, bundles...)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		os.Remove(p)
	}
}
