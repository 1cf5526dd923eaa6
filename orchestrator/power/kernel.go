package power

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/microfaas/microfaas/target"
)

// VMLinux is the uncompressed x86 kernel that mfbuild puts beside the
// bzImage. QEMU's microvm starts it directly at its PVH entry point: no
// real-mode setup code and no decompression (docs/performance.md has the
// numbers).
const VMLinux = "vmlinux"

// xenElfNotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY, the ELF note that
// CONFIG_PVH adds: the 32-bit entry point a PVH loader jumps to.
const xenElfNotePhys32Entry = 18

// BootKernel returns the kernel QEMU should load for the configured one:
// for a target that keeps its vmlinux (KernelELF: x86), a vmlinux with a
// PVH entry beside the kernel image wins; otherwise (ARM, no vmlinux, or
// one built without CONFIG_PVH) the configured kernel.
func BootKernel(t *target.Target, kernel string, log *slog.Logger) string {
	if !t.KernelELF || kernel == "" || filepath.Base(kernel) == VMLinux {
		return kernel
	}
	v := filepath.Join(filepath.Dir(kernel), VMLinux)
	if _, err := os.Stat(v); err != nil {
		return kernel
	}
	if !HasPVHEntry(v) {
		if log != nil {
			log.Warn("vmlinux has no PVH entry (CONFIG_PVH); booting the bzImage", "vmlinux", v)
		}
		return kernel
	}
	return v
}

// HasPVHEntry reports whether the ELF file at path carries the PVH entry
// note, so QEMU can boot it directly.
func HasPVHEntry(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			continue
		}
		if hasNote(b, f.ByteOrder, "Xen", xenElfNotePhys32Entry) {
			return true
		}
	}
	return false
}

// hasNote walks the ELF notes in b for one with the given owner and type.
func hasNote(b []byte, bo binary.ByteOrder, owner string, typ uint32) bool {
	align := func(n uint32) uint32 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		nameSz, descSz, t := bo.Uint32(b[0:4]), bo.Uint32(b[4:8]), bo.Uint32(b[8:12])
		b = b[12:]
		if uint64(align(nameSz))+uint64(align(descSz)) > uint64(len(b)) {
			return false
		}
		name := bytes.TrimRight(b[:nameSz], "\x00")
		if t == typ && string(name) == owner {
			return true
		}
		b = b[align(nameSz)+align(descSz):]
	}
	return false
}
