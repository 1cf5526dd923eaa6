package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Verify checks a written image with independent tools, the way a person
// would before flashing it: U-Boot's mkimage -l on the kernel read back from
// its sectors, fdtget on the device tree read back from the args area,
// fsck.fat -n and mtools on the FAT partition, the ROM's table of contents
// and GP header at each MLO offset, and every item's bytes against the files
// it was made from. It needs u-boot-tools, device-tree-compiler, dosfstools
// and mtools (make deps installs them).
func Verify(path string, b Boot, info Info, wantBootargs string) error {
	img, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	l := info.Layout
	if int64(len(img)) != info.Size {
		return fmt.Errorf("verify: image is %d bytes, want %d", len(img), info.Size)
	}
	tmp, err := os.MkdirTemp("", "mfbuild-verify-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	read := func(p string) []byte {
		d, err := os.ReadFile(p)
		if err != nil {
			bad("verify: %v", err)
		}
		return d
	}
	at := func(r Region, n int) []byte {
		if r.Offset+int64(n) > int64(len(img)) {
			bad("%s at %#x: image too short", r.Name, r.Offset)
			return nil
		}
		return img[r.Offset : r.Offset+int64(n)]
	}

	// MBR: signature, one bootable FAT32 partition where the layout says.
	if img[510] != 0x55 || img[511] != 0xaa {
		bad("MBR: no 0x55aa signature")
	}
	p1 := img[446:462]
	if p1[0] != 0x80 || p1[4] != 0x0c || int64(binary.LittleEndian.Uint32(p1[8:]))*512 != l.FAT.Offset {
		bad("MBR partition 1: boot flag %#x type %#x start sector %d, want 0x80, 0x0c (FAT32 LBA), %d",
			p1[0], p1[4], binary.LittleEndian.Uint32(p1[8:]), l.FAT.Offset/512)
	}

	// MLO at the ROM offsets: the table of contents (CHSETTINGS) and the GP
	// header after it (image size, then load address in SRAM).
	mlo := read(b.MLO)
	for _, r := range l.MLO {
		got := at(r, len(mlo))
		if !bytes.Equal(got, mlo) {
			bad("%s at %#x differs from %s", r.Name, r.Offset, b.MLO)
			continue
		}
		if err := checkMLO(got); err != nil {
			bad("%s at %#x: %v", r.Name, r.Offset, err)
		}
		size, load := binary.LittleEndian.Uint32(got[0x200:]), binary.LittleEndian.Uint32(got[0x204:])
		if int(size) != len(mlo)-0x200 || load != 0x402f0400 {
			bad("%s at %#x: GP header size %d load %#x, want %d (the MLO after its table of contents, as U-Boot's mkimage writes it) and 0x402f0400 (AM335x public SRAM)", r.Name, r.Offset, size, load, len(mlo)-0x200)
		}
	}
	if ub := read(b.UBootImg); !bytes.Equal(at(l.UBoot, len(ub)), ub) {
		bad("u-boot.img at %#x differs from %s", l.UBoot.Offset, b.UBootImg)
	}

	// The kernel, read back from its sectors, is the built uImage, and
	// U-Boot's own tool accepts it.
	uimg := read(b.UImage)
	back := at(l.Kernel, len(uimg))
	if !bytes.Equal(back, uimg) {
		bad("uImage at %#x differs from %s", l.Kernel.Offset, b.UImage)
	} else {
		p := filepath.Join(tmp, "uImage")
		os.WriteFile(p, back, 0o644)
		out, err := exec.Command("mkimage", "-l", p).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "ARM Linux Kernel Image") {
			bad("mkimage -l on the kernel read back from the image: %v\n%s", err, out)
		}
	}

	// The device tree in the args area: the one built for this worker, with
	// the worker's bootargs as fdtget reads them.
	dtb := at(l.Args, len(info.DTB))
	if !bytes.Equal(dtb, info.DTB) {
		bad("device tree at %#x differs from the one written", l.Args.Offset)
	} else if dtb != nil {
		p := filepath.Join(tmp, "args.dtb")
		os.WriteFile(p, dtb, 0o644)
		out, err := exec.Command("fdtget", "-t", "s", p, "/chosen", "bootargs").CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != wantBootargs {
			bad("fdtget /chosen bootargs on the image's device tree: %v: got %q, want %q", err, got, wantBootargs)
		}
	}

	// The FAT partition: fsck.fat finds nothing to fix; mtools lists and
	// reads back the same files.
	part := filepath.Join(tmp, "fat.img")
	os.WriteFile(part, img[l.FAT.Offset:l.FAT.End()], 0o644)
	if out, err := exec.Command("fsck.fat", "-n", part).CombinedOutput(); err != nil {
		bad("fsck.fat -n on the FAT partition: %v\n%s", err, out)
	}
	list, err := exec.Command("mdir", "-i", part, "-b", "::").CombinedOutput()
	if err != nil {
		bad("mdir on the FAT partition: %v\n%s", err, list)
	}
	argsName := b.Raw.FSArgs
	if argsName == "" {
		argsName = "worker.dtb"
	}
	kernelName := b.Raw.FSKernel
	if kernelName == "" {
		kernelName = "uImage"
	}
	for name, want := range map[string][]byte{"MLO": mlo, "u-boot.img": read(b.UBootImg), kernelName: uimg, argsName: info.DTB, UEnvFile: []byte(UEnv(kernelName, argsName))} {
		if !strings.Contains(string(list), "::/"+name) {
			bad("mdir: %s missing from the FAT partition:\n%s", name, list)
			continue
		}
		got, err := exec.Command("mtype", "-i", part, "::"+name).Output()
		if err != nil || !bytes.Equal(got, want) {
			bad("FAT file %s read back with mtype differs from what was written (%v)", name, err)
		}
	}
	return errors.Join(errs...)
}
