package power

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/microfaas/microfaas/protocol"
)

// BootInitrd writes the initramfs one boot of a QEMU worker gets: the
// worker's own initramfs (base; "" when it is linked into the kernel)
// followed by a secret archive holding the worker's key at
// protocol.KeyPath (root-only), which the worker reads and deletes at
// start. The key so travels neither on the kernel command line nor in
// QEMU's argv: the file is owner-only (0600) in dir, which must be
// owner-only too; remove it when the VM exits. Each of bundles follows
// in an archive of its own, at BundlePath (the worker checks its digest
// before it runs it).
func BootInitrd(dir, base, id string, key []byte, bundles ...BootBundle) (string, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("boot initramfs directory: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("boot initramfs directory %s is mode %o: it must be owner-only (0700), it holds worker keys", dir, fi.Mode().Perm())
	}
	f, err := os.CreateTemp(dir, "boot-"+id+"-*.cpio")
	if err != nil {
		return "", fmt.Errorf("boot initramfs: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if base != "" {
		b, err := os.Open(base)
		if err != nil {
			return "", fmt.Errorf("worker initramfs: %w", err)
		}
		_, err = io.Copy(f, b)
		b.Close()
		if err != nil {
			return "", fmt.Errorf("boot initramfs: %w", err)
		}
		// Archives are concatenated on 4-byte boundaries; a compressed base
		// ends wherever it ends, so pad (the kernel skips zeros between).
		if off, _ := f.Seek(0, io.SeekCurrent); off%4 != 0 {
			f.Write(make([]byte, 4-off%4))
		}
	}
	if _, err := f.Write(protocol.KeyArchive(key)); err != nil {
		return "", fmt.Errorf("boot initramfs: %w", err)
	}
	for _, b := range bundles {
		if err := writeBundleArchive(f, b); err != nil {
			return "", fmt.Errorf("boot initramfs: %w", err)
		}
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("boot initramfs: %w", err)
	}
	ok = true
	return filepath.Clean(f.Name()), nil
}

// BundleDir is where a worker finds the bundles its boot carried.
const BundleDir = "/run/bundles"

// BootBundle is a run-time deployed function's bundle (package bundle)
// for one boot to carry: Size bytes from R, named by their SHA-256.
type BootBundle struct {
	Digest string // "sha256:" + 64 hex digits
	Size   int64
	R      io.Reader // an *os.File is copied in the kernel (copy_file_range)
}

// ErrBadDigest means a bundle digest is not "sha256:" and 64 hex digits.
var ErrBadDigest = errors.New(`bundle digest is not "sha256:" and 64 lowercase hex digits`)

// BundlePath is where the bundle with that digest lands in a worker:
// BundleDir/sha256-<hex>.
func BundlePath(digest string) (string, error) {
	hexDigest, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexDigest) != 64 || strings.Trim(hexDigest, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%w: %q", ErrBadDigest, digest)
	}
	return BundleDir + "/sha256-" + hexDigest, nil
}

// writeBundleArchive writes a newc archive holding b alone at its
// BundlePath: the file root-only (0400), run/ 0755 (a directory the
// worker's own archive has too), run/bundles 0700, as protocol.KeyArchive
// lays out the key. The bundle's bytes are copied, not held in memory.
func writeBundleArchive(w io.Writer, b BootBundle) error {
	name, err := BundlePath(b.Digest)
	if err != nil {
		return err
	}
	if b.Size < 0 || b.Size > 0xffffffff { // newc's 8 hex digits
		return fmt.Errorf("bundle %s: size %d does not fit an initramfs entry", b.Digest, b.Size)
	}
	name = strings.TrimPrefix(name, "/")
	dir := path.Dir(name)
	hdr := newcHeader(1, 0o040755, path.Dir(dir), 0)
	hdr = append(hdr, newcHeader(2, 0o040700, dir, 0)...)
	hdr = append(hdr, newcHeader(3, 0o100400, name, b.Size)...)
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	n, err := io.CopyN(w, b.R, b.Size)
	if err != nil {
		return fmt.Errorf("bundle %s: %d of %d bytes: %w", b.Digest, n, b.Size, err)
	}
	trailer := make([]byte, pad4(b.Size))
	trailer = append(trailer, newcHeader(0, 0, "TRAILER!!!", 0)...)
	_, err = w.Write(trailer)
	return err
}

// newcHeader is one newc entry's header and name, padded to 4 bytes; size
// bytes of data (then padding) must follow.
func newcHeader(ino, mode int, name string, size int64) []byte {
	nlink := 1
	if mode&0o040000 != 0 {
		nlink = 2
	}
	h := fmt.Appendf(nil, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	h = append(h, name...)
	h = append(h, 0)
	return append(h, make([]byte, pad4(int64(len(h))))...)
}

// pad4 is how many bytes bring n to a multiple of 4.
func pad4(n int64) int64 { return (4 - n%4) % 4 }
