package image

import (
	"fmt"
	"sort"
	"strings"

	"github.com/microfaas/microfaas/builder/uboot"
	"github.com/microfaas/microfaas/protocol"
)

// The AM335x boot ROM, booting from SD or eMMC, first looks in raw mode for
// an image (a table of contents and GP header: U-Boot's MLO) at these byte
// offsets, then for a file named MLO on the first active FAT partition
// (AM335x TRM, SPRUH73, "MMC/SD Read Sector Procedure in Raw Mode"). Offset 0
// holds our MBR, so MLO goes in every other one not taken by U-Boot's layout.
var ROMRawOffsets = []int64{0x0, 0x20000, 0x40000, 0x60000}

// ROMRawSlot is the space between two ROM offsets: MLO must fit in it.
const ROMRawSlot = 0x20000

// The FAT partition (fallback boot through U-Boot proper, and the files a
// person looks for) starts after the kernel's raw area. These two numbers are
// ours, not the bootloader's: FATStart bounds the kernel's area.
const (
	FATStart = 16 << 20
	// FATSize gives FAT32 (go-diskfs: 512-byte clusters) the 65525 clusters
	// the FAT specification requires of it. (go-diskfs's FAT16 marks a
	// cluster used that no file owns, which fsck.fat reports.)
	FATSize = 40 << 20
	// FATLabel names the partition.
	FATLabel = "MICROFAAS"
)

// Region is one item of the image: where it starts and how far it may go.
type Region struct {
	Name   string
	Offset int64
	// Size is the item's area: the bootloader's fixed size where it has one
	// (the args area), else up to the next item.
	Size int64
	// Source says where the offset (and size) come from.
	Source string
}

// End is the first byte after the region.
func (r Region) End() int64 { return r.Offset + r.Size }

// Layout is the raw image's map, computed from a U-Boot build's raw mode.
type Layout struct {
	MBR    Region
	MLO    []Region
	UBoot  Region
	Env    []Region
	Args   Region
	Kernel Region
	// Key is the worker's key area (protocol.CardKeyOffset): the 4 KiB
	// before the FAT partition.
	Key Region
	FAT Region
	// Total is the image size without extra partitions.
	Total int64
}

// Regions lists every region in offset order.
func (l Layout) Regions() []Region {
	rs := []Region{l.MBR}
	rs = append(rs, l.MLO...)
	rs = append(rs, l.UBoot)
	rs = append(rs, l.Env...)
	rs = append(rs, l.Args, l.Kernel, l.Key, l.FAT)
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].Offset < rs[j].Offset })
	return rs
}

// NewLayout places every item where the U-Boot build reads it, puts MLO at
// each free ROM offset, sizes open-ended items up to the next one, and fails
// if any two overlap.
func NewLayout(r uboot.RawMode) (Layout, error) {
	const s = uboot.SectorSize
	l := Layout{
		MBR: Region{"MBR", 0, s, "MBR partition table (sector 0)"},
		UBoot: Region{Name: "u-boot.img", Offset: r.UBootSector * s,
			Source: fmt.Sprintf("CONFIG_SYS_MMCSD_RAW_MODE_U_BOOT_SECTOR=%#x", r.UBootSector)},
		Args: Region{"device tree (falcon args)", r.ArgsSector * s, r.ArgsSectors * s,
			fmt.Sprintf("CONFIG_SYS_MMCSD_RAW_MODE_ARGS_SECTOR=%#x, _ARGS_SECTORS=%#x", r.ArgsSector, r.ArgsSectors)},
		Kernel: Region{Name: "uImage", Offset: r.KernelSector * s,
			Source: fmt.Sprintf("CONFIG_SYS_MMCSD_RAW_MODE_KERNEL_SECTOR=%#x", r.KernelSector)},
		FAT: Region{"FAT partition", FATStart, FATSize, "builder/image.FATStart, FATSize"},
		Key: Region{"worker key", protocol.CardKeyOffset, protocol.CardKeySize, "protocol.CardKeyOffset (the runtime reads it there)"},
	}
	for _, e := range r.Env {
		l.Env = append(l.Env, Region{e.Name, e.Offset, e.Size, "U-Boot .config"})
	}
	fixed := []Region{l.MBR, l.Args, l.Key, l.FAT}
	fixed = append(fixed, l.Env...)
	// Open-ended items reach to the next item's start.
	starts := []int64{l.MBR.Offset, l.UBoot.Offset, l.Args.Offset, l.Kernel.Offset, l.Key.Offset, l.FAT.Offset}
	for _, e := range l.Env {
		starts = append(starts, e.Offset)
	}
	next := func(off int64) int64 {
		n := int64(-1)
		for _, st := range starts {
			if st > off && (n < 0 || st < n) {
				n = st
			}
		}
		return n
	}
	if n := next(l.UBoot.Offset); n > 0 {
		l.UBoot.Size = n - l.UBoot.Offset
	}
	if n := next(l.Kernel.Offset); n > 0 {
		l.Kernel.Size = n - l.Kernel.Offset
	}
	// MLO copies at every ROM offset whose slot is free.
	others := append(fixed, l.UBoot, l.Kernel)
	for i, off := range ROMRawOffsets {
		slot := Region{fmt.Sprintf("MLO (copy %d)", len(l.MLO)+1), off, ROMRawSlot, fmt.Sprintf("AM335x ROM raw-mode offset %d (%#x)", i, off)}
		free := true
		for _, o := range others {
			if overlaps(slot, o) {
				free = false
			}
		}
		if free {
			l.MLO = append(l.MLO, slot)
		}
	}
	if len(l.MLO) == 0 {
		return l, fmt.Errorf("image layout: no AM335x ROM raw-mode offset (%#x) is free of U-Boot's items: the board could not boot", ROMRawOffsets)
	}
	rs := l.Regions()
	var errs []string
	for i := range rs {
		if rs[i].Size <= 0 {
			errs = append(errs, fmt.Sprintf("%s at %#x (%s) has no room before the next item", rs[i].Name, rs[i].Offset, rs[i].Source))
		}
		for j := i + 1; j < len(rs); j++ {
			if overlaps(rs[i], rs[j]) {
				errs = append(errs, fmt.Sprintf("%s [%#x, %#x) (%s) overlaps %s [%#x, %#x) (%s)",
					rs[i].Name, rs[i].Offset, rs[i].End(), rs[i].Source, rs[j].Name, rs[j].Offset, rs[j].End(), rs[j].Source))
			}
		}
	}
	if len(errs) > 0 {
		return l, fmt.Errorf("image layout from the U-Boot build does not fit:\n  %s", strings.Join(errs, "\n  "))
	}
	l.Total = l.FAT.End()
	return l, nil
}

func overlaps(a, b Region) bool { return a.Offset < b.End() && b.Offset < a.End() }

// fit checks that n bytes of an item fit its region.
func fit(r Region, n int64, what, hint string) error {
	if n > r.Size {
		return fmt.Errorf("%s is %d bytes but its area at %#x holds %d (%s): %s", what, n, r.Offset, r.Size, r.Source, hint)
	}
	return nil
}
