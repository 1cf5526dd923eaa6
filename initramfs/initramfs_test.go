package initramfs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

func build(t *testing.T, opts ...Option) []byte {
	t.Helper()
	a, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := a.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func records(t *testing.T, b []byte) []cpio.Record {
	t.Helper()
	rs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestDeterministic(t *testing.T) {
	dir := t.TempDir()
	initBin := filepath.Join(dir, "init")
	os.WriteFile(initBin, []byte("\x7fELF fake init"), 0o755)
	etc := filepath.Join(dir, "etc")
	os.MkdirAll(filepath.Join(etc, "sub"), 0o755)
	os.WriteFile(filepath.Join(etc, "passwd"), []byte("root:x:0:0::/:/bin/false\n"), 0o644)
	os.WriteFile(filepath.Join(etc, "sub", "b"), []byte("b"), 0o600)
	first := build(t, WithInit(initBin), WithDir("etc", etc), WithBytes("functions/x/run", []byte("#!/bin/sh\n"), 0o755))
	// Touch the inputs: new mtimes must not change the archive.
	later := time.Now().Add(time.Hour)
	for _, p := range []string{initBin, filepath.Join(etc, "passwd")} {
		os.Chtimes(p, later, later)
	}
	second := build(t, WithBytes("functions/x/run", []byte("#!/bin/sh\n"), 0o755), WithDir("etc", etc), WithInit(initBin))
	if !bytes.Equal(first, second) {
		t.Fatal("two builds of the same inputs differ")
	}
}

func TestArchiveContents(t *testing.T) {
	dir := t.TempDir()
	initBin := filepath.Join(dir, "init")
	os.WriteFile(initBin, []byte("init!"), 0o755)
	rs := records(t, build(t, WithInit(initBin), WithBytes("a/b/c", []byte("c"), 0o644)))
	var names []string
	byName := map[string]cpio.Record{}
	for _, r := range rs {
		names = append(names, r.Name)
		byName[r.Name] = r
		if r.MTime != 0 || r.UID != 0 || r.GID != 0 {
			t.Errorf("%s: mtime %d uid %d gid %d, want zeros", r.Name, r.MTime, r.UID, r.GID)
		}
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("entries not sorted: %v", names)
	}
	con, ok := byName["dev/console"]
	if !ok || con.Mode&cpio.S_IFMT != cpio.S_IFCHR || con.Rmajor != 5 || con.Rminor != 1 {
		t.Errorf("dev/console = %+v, want char device 5:1", con.Info)
	}
	for _, d := range []string{"a", "a/b", "proc", "sys", "tmp"} {
		if r, ok := byName[d]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFDIR {
			t.Errorf("missing directory %s", d)
		}
	}
	in := byName["init"]
	body, _ := io.ReadAll(io.NewSectionReader(in, 0, int64(in.FileSize)))
	if string(body) != "init!" || in.Mode&0o777 != 0o755 {
		t.Errorf("init = %q mode %o", body, in.Mode&0o777)
	}
}

func TestNoInit(t *testing.T) {
	a, err := New(WithBytes("etc/x", nil, 0o644))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteTo(io.Discard); !errors.Is(err, ErrNoInit) {
		t.Fatalf("err = %v, want ErrNoInit", err)
	}
	if _, err := New(WithInit("/nonexistent/mfinit")); err == nil {
		t.Fatal("missing init binary accepted")
	}
}

// TestRefusesPathsThroughLinks: the kernel's unpacker follows a symlink in a
// record's parent path, so a link written earlier in the archive would steer
// a later record anywhere in the worker's root (issue 18, attack 1: a
// function image's `l -> /functions` plus `l/aaa` replaced another tenant's
// /functions/aaa). WriteTo refuses such an archive whatever the options'
// order, and writes nothing.
func TestRefusesPathsThroughLinks(t *testing.T) {
	initBin := filepath.Join(t.TempDir(), "init")
	os.WriteFile(initBin, []byte("init!"), 0o755)
	tests := []struct {
		name string
		opts []Option
		want error
	}{
		{"attack 1: child of an absolute link", []Option{
			WithBytes("functions/aaa", []byte("honest"), 0o755),
			WithSymlink("functions/evil/rootfs/l", "/functions"),
			WithBytes("functions/evil/rootfs/l/aaa", []byte("evil"), 0o755)}, ErrUnderSymlink},
		{"child added before its link", []Option{
			WithBytes("functions/evil/rootfs/l/aaa", []byte("evil"), 0o755),
			WithSymlink("functions/evil/rootfs/l", "../../.."),
		}, ErrUnderSymlink},
		{"grandchild under a relative link", []Option{
			WithSymlink("functions/evil/rootfs/up", "../.."),
			WithEmptyDir("functions/evil/rootfs/up/x", 0o755),
			WithSymlink("functions/evil/rootfs/up/x/y", "/"),
		}, ErrUnderSymlink},
		{"link over a skeleton directory", []Option{
			WithSymlink("etc", "/functions"),
			WithBytes("etc/passwd", []byte("x"), 0o644)}, ErrUnderSymlink},
		{"child of a regular file", []Option{
			WithBytes("functions/f", []byte("x"), 0o755),
			WithBytes("functions/f/g", []byte("y"), 0o755)}, ErrParentNotDir},
		{"links themselves are fine", []Option{
			WithSymlink("functions/img/rootfs/lib64", "usr/lib64"),
			WithBytes("functions/img/rootfs/usr/lib64/ld.so", []byte("ld"), 0o755),
			WithSymlink("bin/sh", "busybox")}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(append([]Option{WithInit(initBin)}, tt.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			_, err = a.WriteTo(&buf)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want != nil && buf.Len() != 0 {
				t.Errorf("%d bytes written before the refusal", buf.Len())
			}
		})
	}
}
