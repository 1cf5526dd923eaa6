package initramfs

import (
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// WriteSecretArchive writes a tiny newc archive holding one file at dst
// (e.g. "run/mf/key"), mode 0400, in directories of mode 0700, all owned by
// root. Appended to a worker's initramfs (the kernel unpacks concatenated
// archives in order), it gives one boot its secret without putting it on
// the kernel command line. It has no /init: it is never booted alone.
func WriteSecretArchive(w io.Writer, dst string, content []byte) error {
	dst, err := clean(dst)
	if err != nil {
		return err
	}
	var recs []cpio.Record
	parts := strings.Split(dst, "/")
	for i := 1; i < len(parts); i++ {
		dir := path.Join(parts[:i]...)
		mode := uint64(0o700)
		if i == 1 {
			mode = 0o755 // a top-level directory the worker's own archive also has (run)
		}
		recs = append(recs, cpio.Directory(dir, mode))
	}
	recs = append(recs, cpio.StaticFile(dst, string(content), 0o400))
	rw := cpio.Newc.Writer(w)
	for i, r := range recs {
		r = cpio.MakeReproducible(r)
		r.Ino = uint64(i + 1)
		r.NLink = 1
		if err := rw.WriteRecord(r); err != nil {
			return fmt.Errorf("secret archive: %w", err)
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return fmt.Errorf("secret archive: %w", err)
	}
	return nil
}
