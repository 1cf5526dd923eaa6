package protocol

import (
	"bytes"
	"fmt"
	"path"
	"strings"
)

// KeyArchive is a newc cpio archive holding the worker's key file at
// KeyPath (mode 0400, in directories of mode 0700 below the top one), all
// owned by root, with zero times. Appended to a worker's initramfs (the
// kernel unpacks concatenated archives in order), it gives one boot its key
// without putting it on the kernel command line. It has no /init: it is
// never booted alone. Written by hand (the format is a 110-byte ASCII header
// per entry) so the orchestrator needs no initramfs code.
func KeyArchive(key []byte) []byte {
	var b bytes.Buffer
	name := strings.TrimPrefix(KeyPath, "/")
	parts := strings.Split(name, "/")
	ino := 1
	for i := 1; i < len(parts); i++ {
		mode := 0o040700
		if i == 1 {
			mode = 0o040755 // a top-level directory the worker's own archive also has (run)
		}
		newcEntry(&b, ino, mode, path.Join(parts[:i]...), nil)
		ino++
	}
	newcEntry(&b, ino, 0o100400, name, EncodeKey(key))
	newcEntry(&b, 0, 0, "TRAILER!!!", nil)
	return b.Bytes()
}

// newcEntry writes one newc record: header, name, data, each padded to 4.
func newcEntry(b *bytes.Buffer, ino, mode int, name string, data []byte) {
	nlink := 1
	if mode&0o040000 != 0 {
		nlink = 2
	}
	fmt.Fprintf(b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	b.WriteString(name)
	b.WriteByte(0)
	pad4(b)
	b.Write(data)
	pad4(b)
}

func pad4(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}
