package power

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/microfaas/microfaas/bundle"
	"github.com/microfaas/microfaas/protocol"
)

// BootInitrd writes the initramfs one boot of a QEMU worker gets: the
// worker's own initramfs (base; "" when it is linked into the kernel)
// followed by a secret archive holding the worker's key at
// protocol.KeyPath (root-only), which the worker reads and deletes at
// start. The key so travels neither on the kernel command line nor in
// QEMU's argv: the file is owner-only (0600) in dir, which must be
// owner-only too; remove it when the VM exits. Each of bundles follows
// in an archive of its own, unpacked by the kernel at BundlePath (the
// worker checks the tree's digest before it runs it).
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

// BundleDir is where a worker finds the bundles its boot carried: its
// kernel unpacks each into BundleDir/<hex of the digest> (config.json,
// rootfs/), as it unpacks the baked-in functions, and the worker hashes
// that tree (bundle.DigestTree) before anything of it runs.
const BundleDir = "/bundles"

// BootBundle is a run-time deployed function's bundle (package bundle)
// for one boot to carry: Size bytes from R, named by their SHA-256.
type BootBundle struct {
	Digest string // "sha256:" + 64 hex digits
	Size   int64
	R      io.Reader
}

// ErrBadDigest means a bundle digest is not "sha256:" and 64 hex digits.
var ErrBadDigest = errors.New(`bundle digest is not "sha256:" and 64 lowercase hex digits`)

// BundlePath is the directory the bundle with that digest is unpacked
// into on a worker: BundleDir/<hex>.
func BundlePath(digest string) (string, error) {
	hexDigest, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexDigest) != 64 || strings.Trim(hexDigest, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%w: %q", ErrBadDigest, digest)
	}
	return BundleDir + "/" + hexDigest, nil
}

// writeBundleArchive writes a newc archive holding b's records renamed
// under its BundlePath (bundle.WritePrefixed, which checks them), after
// the directories BundleDir and BundlePath, both root-only (0700): the
// kernel unpacks the bundle in C, so a worker does not unpack it in Go.
// w must be at a multiple of 4 bytes. The bundle is streamed, not held in
// memory.
func writeBundleArchive(w io.Writer, b BootBundle) error {
	name, err := BundlePath(b.Digest)
	if err != nil {
		return err
	}
	name = strings.TrimPrefix(name, "/")
	bw := bufio.NewWriterSize(w, 256<<10)
	hdr := newcHeader(1, 0o040700, path.Dir(name), 0)
	hdr = append(hdr, newcHeader(2, 0o040700, name, 0)...)
	if _, err := bw.Write(hdr); err != nil {
		return err
	}
	lr := &io.LimitedReader{R: b.R, N: b.Size}
	if err := bundle.WritePrefixed(bw, bufio.NewReaderSize(lr, 256<<10), name, bundle.DefaultLimits); err != nil {
		return fmt.Errorf("bundle %s (%d bytes): %w", b.Digest, b.Size, err)
	}
	// WritePrefixed read to the end: a bundle that ended early is not the
	// one named.
	if lr.N != 0 {
		return fmt.Errorf("bundle %s: %d bytes short of its %d: %w", b.Digest, lr.N, b.Size, bundle.ErrUnsafeImage)
	}
	return bw.Flush()
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
