// Package initramfs writes a worker's initramfs: a deterministic newc cpio
// archive whose /init is the mfinit worker. Entries are sorted, owned by
// root, with zero mtimes and inode numbers assigned in order, so the same
// inputs always give the same bytes.
package initramfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// ErrNoInit means the archive would have no /init: the kernel would panic
// with "No working init found". Pass WithInit.
var ErrNoInit = errors.New("initramfs has no /init: give the worker binary with WithInit")

// ErrUnderSymlink means a record's parent path goes through a symlink of the
// same archive. The kernel's unpacker would follow the link and write the
// record wherever it points (another function's files, /init), so such an
// archive is refused.
var ErrUnderSymlink = errors.New("initramfs: a path goes through a symlink")

// ErrParentNotDir means a record sits below a regular file or device node.
var ErrParentNotDir = errors.New("initramfs: a parent path is not a directory")

// Archive collects the files of an initramfs.
type Archive struct {
	entries map[string]cpio.Record
}

// Option adds content to an Archive.
type Option func(*Archive) error

// New returns an archive holding the skeleton every worker needs (/dev with
// a console, mount points) plus what opts add.
func New(opts ...Option) (*Archive, error) {
	a := &Archive{entries: map[string]cpio.Record{}}
	for _, d := range []string{"dev", "proc", "sys", "tmp", "run", "etc", "functions"} {
		a.entries[d] = cpio.Directory(d, 0o755)
	}
	// The kernel opens /dev/console for PID 1's stdio before devtmpfs is
	// mounted; without this node the worker's output is lost.
	a.entries["dev/console"] = cpio.CharDev("dev/console", 0o600, 5, 1)
	for _, o := range opts {
		if err := o(a); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// WithInit makes the file at src the archive's /init (the mfinit binary).
func WithInit(src string) Option {
	return WithFile("init", src, 0o755)
}

// WithFile adds the host file src at dst (relative to the root) with perm.
func WithFile(dst, src string, perm uint64) Option {
	return func(a *Archive) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("initramfs: add %s: %w", dst, err)
		}
		return WithBytes(dst, b, perm)(a)
	}
}

// WithBytes adds a file with the given contents at dst.
func WithBytes(dst string, content []byte, perm uint64) Option {
	return func(a *Archive) error {
		name, err := clean(dst)
		if err != nil {
			return err
		}
		a.entries[name] = cpio.StaticRecord(content, cpio.Info{Name: name, Mode: cpio.S_IFREG | (perm & 0o7777)})
		return nil
	}
}

// WithSymlink adds a symbolic link at dst pointing to target.
func WithSymlink(dst, target string) Option {
	return func(a *Archive) error {
		name, err := clean(dst)
		if err != nil {
			return err
		}
		a.entries[name] = cpio.Symlink(name, target)
		return nil
	}
}

// WithEmptyDir adds a directory at dst with perm.
func WithEmptyDir(dst string, perm uint64) Option {
	return func(a *Archive) error {
		name, err := clean(dst)
		if err != nil {
			return err
		}
		a.entries[name] = cpio.Directory(name, perm&0o7777)
		return nil
	}
}

// WithDir adds every regular file under the host directory src at dst,
// keeping their permission bits.
func WithDir(dst, src string) Option {
	return func(a *Archive) error {
		return walk(src, func(rel string, fi os.FileInfo) error {
			target := path.Join(dst, rel)
			if fi.IsDir() {
				name, err := clean(target)
				if err != nil {
					return err
				}
				a.entries[name] = cpio.Directory(name, uint64(fi.Mode().Perm()))
				return nil
			}
			if !fi.Mode().IsRegular() {
				return fmt.Errorf("initramfs: %s: only regular files and directories can be added", path.Join(src, rel))
			}
			return WithFile(target, path.Join(src, rel), uint64(fi.Mode().Perm()))(a)
		})
	}
}

func walk(root string, fn func(rel string, fi os.FileInfo) error) error {
	var visit func(rel string) error
	visit = func(rel string) error {
		full := path.Join(root, rel)
		fi, err := os.Lstat(full)
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		if rel != "" {
			if err := fn(rel, fi); err != nil {
				return err
			}
		}
		if !fi.IsDir() {
			return nil
		}
		ents, err := os.ReadDir(full)
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		for _, e := range ents {
			if err := visit(path.Join(rel, e.Name())); err != nil {
				return err
			}
		}
		return nil
	}
	return visit("")
}

func clean(p string) (string, error) {
	c := strings.TrimPrefix(path.Clean("/"+p), "/")
	if c == "" || c == "." {
		return "", fmt.Errorf("initramfs: bad path %q", p)
	}
	return c, nil
}

// Names returns the archive's paths, sorted.
func (a *Archive) Names() []string {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// WriteTo writes the archive as newc cpio: parents before children, sorted,
// normalised for reproducibility, then the trailer.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	if _, ok := a.entries["init"]; !ok {
		return 0, ErrNoInit
	}
	// Every parent must be a real directory (the unpacker follows a link
	// in a parent path: defence in depth behind the builder's own checks)
	// and must exist before its children.
	for _, n := range a.Names() {
		for d := path.Dir(n); d != "."; d = path.Dir(d) {
			r, ok := a.entries[d]
			switch {
			case !ok:
				a.entries[d] = cpio.Directory(d, 0o755)
			case r.Mode&cpio.S_IFMT == cpio.S_IFLNK:
				return 0, fmt.Errorf("%w: %s is below the symlink %s, and the kernel would write it where the link points: put it in a real directory", ErrUnderSymlink, n, d)
			case r.Mode&cpio.S_IFMT != cpio.S_IFDIR:
				return 0, fmt.Errorf("%w: %s is below %s, which is not a directory", ErrParentNotDir, n, d)
			}
		}
	}
	cw := &countWriter{w: w}
	rw := cpio.Newc.Writer(cw)
	for i, n := range a.Names() {
		r := cpio.MakeReproducible(a.entries[n])
		r.Ino = uint64(i + 1)
		r.NLink = 1
		if err := rw.WriteRecord(r); err != nil {
			return cw.n, fmt.Errorf("initramfs: write %s: %w", n, err)
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return cw.n, fmt.Errorf("initramfs: write trailer: %w", err)
	}
	return cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
