// Package image writes what a BeagleBone Black boots from: the legacy U-Boot
// image (uImage) around the kernel, the worker's device tree with its
// /chosen/bootargs, and raw SD-card and eMMC images laid out where the U-Boot
// build says (MLO, u-boot.img, DTB, kernel) plus a FAT partition for the
// fallback boot through U-Boot proper.
package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
)

// Legacy U-Boot image header constants (U-Boot include/image.h).
const (
	UImageMagic      = 0x27051956
	UImageHeaderSize = 64
	uimageNameLen    = 32

	OSLinux       = 5 // IH_OS_LINUX
	ArchARM       = 2 // IH_ARCH_ARM
	TypeKernel    = 2 // IH_TYPE_KERNEL
	TypeScript    = 6 // IH_TYPE_SCRIPT
	CompNone      = 0 // IH_COMP_NONE: the zImage decompresses itself
	KernelLoadARM = 0x80008000
)

// UImage describes a legacy image header.
type UImage struct {
	Load, Entry uint32
	OS, Arch    uint8
	Type, Comp  uint8
	Name        string // at most 31 bytes; NUL-padded to 32
	// Time is the header's timestamp; 0 keeps images reproducible.
	Time uint32
}

// UImageHeader is a parsed header.
type UImageHeader struct {
	UImage
	Size    uint32
	DataCRC uint32
	HCRC    uint32
}

// EncodeUImage returns the 64-byte header followed by data. Both CRCs are
// the IEEE CRC-32 U-Boot checks: the data CRC over the payload, the header
// CRC over the header with its CRC field zero.
func EncodeUImage(h UImage, data []byte) ([]byte, error) {
	if len(h.Name) >= uimageNameLen {
		return nil, fmt.Errorf("uImage name %q: at most %d bytes", h.Name, uimageNameLen-1)
	}
	if uint64(len(data)) > 0xffffffff {
		return nil, fmt.Errorf("uImage payload of %d bytes does not fit the 32-bit size field", len(data))
	}
	hdr := make([]byte, UImageHeaderSize)
	be := binary.BigEndian
	be.PutUint32(hdr[0:], UImageMagic)
	// hdr[4:8] header CRC, filled in last
	be.PutUint32(hdr[8:], h.Time)
	be.PutUint32(hdr[12:], uint32(len(data)))
	be.PutUint32(hdr[16:], h.Load)
	be.PutUint32(hdr[20:], h.Entry)
	be.PutUint32(hdr[24:], crc32.ChecksumIEEE(data))
	hdr[28], hdr[29], hdr[30], hdr[31] = h.OS, h.Arch, h.Type, h.Comp
	copy(hdr[32:], h.Name)
	be.PutUint32(hdr[4:], crc32.ChecksumIEEE(hdr))
	return append(hdr, data...), nil
}

// ErrNotUImage means the bytes do not start with a valid legacy header.
var ErrNotUImage = errors.New("not a legacy U-Boot image")

// ParseUImage checks a legacy image's header and, if data holds the whole
// image, its data CRC.
func ParseUImage(b []byte) (UImageHeader, error) {
	if len(b) < UImageHeaderSize {
		return UImageHeader{}, fmt.Errorf("%w: %d bytes", ErrNotUImage, len(b))
	}
	be := binary.BigEndian
	if m := be.Uint32(b); m != UImageMagic {
		return UImageHeader{}, fmt.Errorf("%w: magic %#x", ErrNotUImage, m)
	}
	hdr := append([]byte(nil), b[:UImageHeaderSize]...)
	h := UImageHeader{HCRC: be.Uint32(hdr[4:])}
	be.PutUint32(hdr[4:], 0)
	if got := crc32.ChecksumIEEE(hdr); got != h.HCRC {
		return h, fmt.Errorf("%w: header CRC %#x, computed %#x", ErrNotUImage, h.HCRC, got)
	}
	h.Time, h.Size = be.Uint32(b[8:]), be.Uint32(b[12:])
	h.Load, h.Entry, h.DataCRC = be.Uint32(b[16:]), be.Uint32(b[20:]), be.Uint32(b[24:])
	h.OS, h.Arch, h.Type, h.Comp = b[28], b[29], b[30], b[31]
	h.Name = string(bytes.TrimRight(b[32:64], "\x00"))
	if len(b) >= UImageHeaderSize+int(h.Size) {
		if got := crc32.ChecksumIEEE(b[UImageHeaderSize : UImageHeaderSize+int(h.Size)]); got != h.DataCRC {
			return h, fmt.Errorf("%w: data CRC %#x, computed %#x", ErrNotUImage, h.DataCRC, got)
		}
	}
	return h, nil
}

// WriteKernelUImage wraps an ARM zImage in a legacy kernel image for U-Boot
// SPL's falcon mode (which loads legacy images) and writes it to out.
func WriteKernelUImage(zImage, out, name string) error {
	data, err := os.ReadFile(zImage)
	if err != nil {
		return fmt.Errorf("uImage: %w", err)
	}
	if _, err := ParseZImage(data); err != nil {
		return fmt.Errorf("uImage of %s: %w", zImage, err)
	}
	b, err := EncodeUImage(UImage{Load: KernelLoadARM, Entry: KernelLoadARM, OS: OSLinux, Arch: ArchARM,
		Type: TypeKernel, Comp: CompNone, Name: name}, data)
	if err != nil {
		return err
	}
	return writeFileAtomic(out, b, 0o644)
}

// ZImage is what an ARM zImage's header says about it.
type ZImage struct {
	Size uint32 // bytes of the zImage file proper (end - start)
	// Inflated is the size of the decompressed kernel (with the linked-in
	// initramfs) and BSS its zero-initialised data after it; both from the
	// zImage's size table, 0 if the kernel is too old to have one.
	Inflated, BSS uint32
}

// zImage header (arch/arm/boot/compressed/head.S): magic at 0x24, start and
// end at 0x28/0x2c, and since Linux 4.x a table pointer at 0x34 whose table
// (vmlinux.lds.S) gives the inflated size's location and the BSS size.
const (
	zImageMagic = 0x016f2818
	zTableMagic = 0x5a534c4b // "KLSZ"
)

// ParseZImage reads an ARM zImage's header and size table.
func ParseZImage(b []byte) (ZImage, error) {
	le := binary.LittleEndian
	if len(b) < 0x38 || le.Uint32(b[0x24:]) != zImageMagic {
		return ZImage{}, errors.New("not an ARM zImage (no magic 0x016f2818 at offset 0x24)")
	}
	start, end := le.Uint32(b[0x28:]), le.Uint32(b[0x2c:])
	z := ZImage{Size: end - start}
	if int(z.Size) != len(b) {
		return z, fmt.Errorf("zImage header says %d bytes, file has %d", z.Size, len(b))
	}
	if le.Uint32(b[0x30:]) != 0x04030201 {
		return z, errors.New("zImage is not little-endian")
	}
	table := le.Uint32(b[0x34:]) - start
	if uint64(table)+12 > uint64(len(b)) || le.Uint32(b[table+4:]) != zTableMagic {
		return z, nil // no size table
	}
	sizeAt := le.Uint32(b[table+8:])
	if uint64(sizeAt)+4 > uint64(len(b)) {
		return z, fmt.Errorf("zImage size table points outside the file (%#x)", sizeAt)
	}
	z.Inflated = le.Uint32(b[sizeAt:])
	z.BSS = le.Uint32(b[table+12:])
	return z, nil
}

// writeFileAtomic writes b to path through a temporary file, so a failure
// never leaves a partial file behind.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, perm); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
