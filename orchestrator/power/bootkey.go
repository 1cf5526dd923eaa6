package power

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/microfaas/microfaas/protocol"
)

// BootInitrd writes the initramfs one boot of a QEMU worker gets: the
// worker's own initramfs (base; "" when it is linked into the kernel)
// followed by a secret archive holding the worker's key at
// protocol.KeyPath (root-only), which the worker reads and deletes at
// start. The key so travels neither on the kernel command line nor in
// QEMU's argv: the file is owner-only (0600) in dir, which must be
// owner-only too; remove it when the VM exits.
func BootInitrd(dir, base, id string, key []byte) (string, error) {
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
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("boot initramfs: %w", err)
	}
	ok = true
	return filepath.Clean(f.Name()), nil
}
