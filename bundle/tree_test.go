package bundle

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
	"golang.org/x/sys/unix"
)

// kernelUnpack makes the entries of a newc archive below root as the
// kernel's initramfs unpacker does (exact modes; as a test user, the
// directory modes are set last so that read-only ones can be filled). It
// returns the records read.
func kernelUnpack(t *testing.T, b []byte, root string) []cpio.Record {
	t.Helper()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	type dirMode struct {
		p    string
		mode os.FileMode
	}
	var dirs []dirMode
	for _, r := range recs {
		p := filepath.Join(root, r.Name)
		perm := os.FileMode(r.Mode & 0o7777)
		switch r.Mode & modeType {
		case modeDir:
			if err := os.Mkdir(p, 0o700); err != nil && !os.IsExist(err) {
				t.Fatal(err)
			}
			dirs = append(dirs, dirMode{p, perm})
		case modeReg:
			data, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := unix.Chmod(p, uint32(perm)); err != nil {
				t.Fatal(err)
			}
		case modeSymlink:
			target, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(string(target), p); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("record %s has mode %o", r.Name, r.Mode)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := unix.Chmod(dirs[i].p, uint32(dirs[i].mode)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { makeWritable(root) })
	return recs
}

// makeWritable lets t.TempDir's cleanup remove read-only directories.
func makeWritable(root string) {
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
}

// tricky adds to sample what sorting and records could get wrong: names
// whose byte order differs from a walk's ("a-c" sorts before "a/b"), an
// empty directory, a deep link, a file larger than a read buffer.
func tricky() *Tree {
	tr := sample()
	tr.Files["a/b"] = Entry{Type: tar.TypeReg, Mode: 0o644, Data: []byte("b")}
	tr.Files["a-c"] = Entry{Type: tar.TypeReg, Mode: 0o640, Data: bytes.Repeat([]byte{0, 1, 2}, 1<<19)}
	tr.Files["a.d"] = Entry{Type: tar.TypeDir, Mode: 0o700}
	tr.Files["etc/deep/x/up"] = Entry{Type: tar.TypeSymlink, Target: "../../../bin/app"}
	return tr
}

// TestWritePrefixedDigestTree: a bundle written under a prefix and
// unpacked as the kernel does hashes, as a tree, to the bundle's digest,
// with its config; Unpack's tree does too. The archive's records are
// Encode's, renamed: the prefix directories are the caller's.
func TestWritePrefixedDigestTree(t *testing.T) {
	b := encode(t, tricky(), sampleConfig)
	want, err := Digest(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WritePrefixed(&out, bytes.NewReader(b), "bundles/x", DefaultLimits); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bundles", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	recs := kernelUnpack(t, out.Bytes(), root)
	orig, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(orig) {
		t.Fatalf("%d records, want the bundle's %d", len(recs), len(orig))
	}
	for i, r := range recs {
		o := orig[i]
		if r.Name != "bundles/x/"+o.Name || r.Mode != o.Mode || r.FileSize != o.FileSize || r.UID != 0 || r.GID != 0 || r.NLink != o.NLink {
			t.Errorf("record %d: %s mode %o size %d uid %d nlink %d, want bundles/x/%s mode %o size %d uid 0 nlink %d",
				i, r.Name, r.Mode, r.FileSize, r.UID, r.NLink, o.Name, o.Mode, o.FileSize, o.NLink)
		}
	}
	got, cfg, err := DigestTree(filepath.Join(root, "bundles", "x"), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if got != want || !reflect.DeepEqual(cfg, sampleConfig) {
		t.Errorf("tree digest %s config %+v, want %s %+v", got, cfg, want, sampleConfig)
	}
	unpacked := t.TempDir()
	if _, err := Unpack(bytes.NewReader(b), unpacked, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { makeWritable(unpacked) })
	if got, _, err := DigestTree(unpacked, DefaultLimits); err != nil || got != want {
		t.Errorf("Unpack's tree: %s, %v; want %s", got, err, want)
	}
}

// TestDigestTreeTampered: a tree that differs from the bundle in any way
// hashes to another digest or is refused.
func TestDigestTreeTampered(t *testing.T) {
	b := encode(t, tricky(), sampleConfig)
	want, _ := Digest(bytes.NewReader(b))
	tests := []struct {
		name   string
		tamper func(t *testing.T, dir string) error
		err    error // nil: a different digest
	}{
		{"one byte of a large file", func(t *testing.T, dir string) error {
			p := filepath.Join(dir, "rootfs/a-c")
			data, _ := os.ReadFile(p)
			data[len(data)/2] ^= 1
			return os.WriteFile(p, data, 0)
		}, nil},
		{"one byte of a small file", func(t *testing.T, dir string) error {
			return os.WriteFile(filepath.Join(dir, "rootfs/a/b"), []byte("c"), 0)
		}, nil},
		{"the config", func(t *testing.T, dir string) error {
			return os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"entrypoint":["/bin/sh"]}`), 0)
		}, nil},
		{"an extra file", func(t *testing.T, dir string) error {
			return os.WriteFile(filepath.Join(dir, "rootfs/tmp/extra"), nil, 0o644)
		}, nil},
		{"an extra file next to rootfs", func(t *testing.T, dir string) error {
			return os.WriteFile(filepath.Join(dir, "a"), nil, 0o644)
		}, nil},
		{"a file missing", func(t *testing.T, dir string) error {
			return os.Remove(filepath.Join(dir, "rootfs/a/b"))
		}, nil},
		{"a changed mode", func(t *testing.T, dir string) error {
			return os.Chmod(filepath.Join(dir, "rootfs/lib/ld.so"), 0o777)
		}, nil},
		{"setuid", func(t *testing.T, dir string) error {
			return unix.Chmod(filepath.Join(dir, "rootfs/lib/ld.so"), 0o4755)
		}, nil},
		{"a directory's mode", func(t *testing.T, dir string) error {
			return os.Chmod(filepath.Join(dir, "rootfs/tmp"), 0o777)
		}, nil},
		{"a symlink retargeted", func(t *testing.T, dir string) error {
			p := filepath.Join(dir, "rootfs/lib64/ld.so")
			os.Remove(p)
			return os.Symlink("../lib/ld.sx", p)
		}, nil},
		{"a file replaced by a symlink to it", func(t *testing.T, dir string) error {
			p := filepath.Join(dir, "rootfs/a/b")
			os.Rename(p, p+"x")
			return os.Symlink("bx", p)
		}, nil},
		{"a second hard link", func(t *testing.T, dir string) error {
			return os.Link(filepath.Join(dir, "rootfs/a/b"), filepath.Join(dir, "rootfs/a/c"))
		}, ErrDigestMismatch},
		{"a FIFO", func(t *testing.T, dir string) error {
			return unix.Mkfifo(filepath.Join(dir, "rootfs/tmp/fifo"), 0o644)
		}, ErrDigestMismatch},
		{"no config", func(t *testing.T, dir string) error {
			return os.Remove(filepath.Join(dir, "config.json"))
		}, ErrDigestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := Unpack(bytes.NewReader(b), dir, DefaultLimits); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { makeWritable(dir) })
			if err := tt.tamper(t, dir); err != nil {
				t.Fatal(err)
			}
			got, _, err := DigestTree(dir, DefaultLimits)
			switch {
			case tt.err != nil && !errors.Is(err, tt.err):
				t.Errorf("err = %v, want %v", err, tt.err)
			case tt.err == nil && (err != nil || got == want):
				t.Errorf("digest %s, %v: want another digest than the bundle's", got, err)
			}
		})
	}
	t.Run("untouched", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := Unpack(bytes.NewReader(b), dir, DefaultLimits); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { makeWritable(dir) })
		if got, _, err := DigestTree(dir, DefaultLimits); got != want || err != nil {
			t.Errorf("digest %s, %v; want %s", got, err, want)
		}
	})
}

func TestDigestTreeLimits(t *testing.T) {
	b := encode(t, tricky(), sampleConfig)
	dir := t.TempDir()
	if _, err := Unpack(bytes.NewReader(b), dir, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { makeWritable(dir) })
	for _, lim := range []Limits{
		{Stream: 1 << 30, Bytes: 1 << 30, Files: 3, FileBytes: 1 << 30},
		{Stream: 1 << 30, Bytes: 1 << 30, Files: 100, FileBytes: 1000},
		{Stream: 1 << 30, Bytes: 1000, Files: 100, FileBytes: 1 << 30},
	} {
		if _, _, err := DigestTree(dir, lim); !errors.Is(err, ErrImageTooLarge) {
			t.Errorf("%+v: %v, want ErrImageTooLarge", lim, err)
		}
	}
	if _, _, err := DigestTree(filepath.Join(dir, "rootfs/root"), DefaultLimits); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("a symlink as the tree: %v, want ErrDigestMismatch", err)
	}
}

func TestWritePrefixedRefuses(t *testing.T) {
	b := encode(t, sample(), sampleConfig)
	for _, p := range []string{"", "/abs", "a/../b", "a/"} {
		if err := WritePrefixed(io.Discard, bytes.NewReader(b), p, DefaultLimits); err == nil || !strings.Contains(err.Error(), "prefix") {
			t.Errorf("prefix %q: %v", p, err)
		}
	}
	if err := WritePrefixed(io.Discard, bytes.NewReader(b[:len(b)-200]), "x", DefaultLimits); !errors.Is(err, ErrUnsafeImage) {
		t.Errorf("truncated: %v, want ErrUnsafeImage", err)
	}
}
