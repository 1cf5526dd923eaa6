package builder

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	"github.com/microfaas/microfaas/initramfs"
)

// CompressGzip is the one initramfs compression offered: Go's own gzip
// (deterministic: no name, no time in the header), which every worker
// kernel unpacks (CONFIG_RD_GZIP).
const CompressGzip = "gzip"

// ErrCompress means an initramfs compression mfbuild does not offer, or one
// asked for an ARM worker.
var ErrCompress = errors.New("bad initramfs compression")

func checkCompress(o Options) error {
	switch o.Compress {
	case "", "none":
		return nil
	case CompressGzip:
		if o.Arch.InitramfsLinked {
			return fmt.Errorf("%w: the %s initramfs is linked into the kernel image, which is compressed already: drop --compress", ErrCompress, o.Arch.Name)
		}
		return nil
	}
	return fmt.Errorf("%w %q: want none or gzip", ErrCompress, o.Compress)
}

// writeArchive writes a to w, gzip-compressed if compress says so.
func writeArchive(w io.Writer, a *initramfs.Archive, compress string) error {
	if compress != CompressGzip {
		_, err := a.WriteTo(w)
		return err
	}
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := a.WriteTo(zw); err != nil {
		return err
	}
	return zw.Close()
}
