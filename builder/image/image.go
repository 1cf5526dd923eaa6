package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/mbr"

	"github.com/microfaas/microfaas/builder/uboot"
	"github.com/microfaas/microfaas/protocol"
)

// Boot holds the worker-independent files every image carries.
type Boot struct {
	MLO, UBootImg string // from the U-Boot build
	UImage        string // the kernel (initramfs linked in) as a legacy image
	DTB           string // am335x-boneblack.dtb from the kernel build
	Raw           uboot.RawMode
}

// Spec is what makes one image personal.
type Spec struct {
	Bootargs string // written into the DTB's /chosen/bootargs
	Label    string // FAT volume label (at most 11 characters)
	// Key, if set, is the worker's key, written to the key area
	// (protocol.CardKeyOffset), where the runtime reads it at boot.
	Key []byte
	// Payload, if set, is stored as a second MBR partition (type 0xda, raw
	// data): the flasher's eMMC image.
	Payload []byte
}

// Info describes a written image.
type Info struct {
	Path   string
	Size   int64
	SHA256 string
	Layout Layout
	// DTB is the personalised device tree written to the args area.
	DTB []byte
	// Personal are the byte ranges that hold this worker's data (the DTB in
	// the args area and in the FAT partition); everything else is the same
	// for every worker of a cluster.
	Personal []Region
	// Payload is where Spec.Payload went.
	Payload Region
}

// FAT file names. SPL's FAT falcon mode (the ROM found MLO on the FAT
// partition rather than in raw mode) loads RawMode.FSKernel and FSArgs.
const (
	UEnvFile   = "uEnv.txt"
	PayloadTyp = mbr.Type(0xda) // "non-FS data"
)

// fatTime fixes the FAT directory timestamps go-diskfs writes (it honours
// SOURCE_DATE_EPOCH) so images are reproducible: 1980-01-01, the FAT epoch.
const fatTime = "315532800"

var envOnce sync.Once

// rawWriteAt writes the raw items (the key among them) into the image file;
// a variable so a test can see the file's mode at the moment a key byte lands.
var rawWriteAt = (*os.File).WriteAt

// Write builds the image at out: it is written to a temporary file beside
// out and renamed when complete, so a failure leaves nothing behind.
func Write(out string, b Boot, s Spec) (Info, error) {
	envOnce.Do(func() {
		if os.Getenv("SOURCE_DATE_EPOCH") == "" {
			os.Setenv("SOURCE_DATE_EPOCH", fatTime)
		}
	})
	l, err := NewLayout(b.Raw)
	if err != nil {
		return Info{}, err
	}
	files := map[string][]byte{}
	for name, p := range map[string]string{"MLO": b.MLO, "u-boot.img": b.UBootImg, "uImage": b.UImage, "dtb": b.DTB} {
		data, err := os.ReadFile(p)
		if err != nil {
			return Info{}, fmt.Errorf("image input %s: %w", name, err)
		}
		files[name] = data
	}
	if _, err := ParseUImage(files["uImage"]); err != nil {
		return Info{}, fmt.Errorf("image input %s: %w", b.UImage, err)
	}
	if err := checkMLO(files["MLO"]); err != nil {
		return Info{}, fmt.Errorf("image input %s: %w", b.MLO, err)
	}
	dtb, err := PersonaliseDTB(files["dtb"], s.Bootargs)
	if err != nil {
		return Info{}, err
	}
	var errs []error
	for _, m := range l.MLO {
		errs = append(errs, fit(m, int64(len(files["MLO"])), "MLO", "the AM335x ROM loads at most one slot"))
	}
	errs = append(errs,
		fit(l.UBoot, int64(len(files["u-boot.img"])), "u-boot.img", "move the args/kernel sectors up in configs/u-boot/2023.01/am335x-falcon.config"),
		fit(l.Args, int64(len(dtb)), "the device tree", "SPL loads only CONFIG_SYS_MMCSD_RAW_MODE_ARGS_SECTORS sectors: raise it in configs/u-boot/2023.01/am335x-falcon.config"),
		fit(l.Kernel, int64(len(files["uImage"])), "the kernel uImage", "make the kernel or initramfs smaller, or move builder/image.FATStart"),
	)
	if err := errors.Join(errs...); err != nil {
		return Info{}, err
	}
	if err := checkKernelMemory(files["uImage"], b.Raw.ArgsAddr); err != nil {
		return Info{}, err
	}
	argsName := b.Raw.FSArgs
	if argsName == "" {
		argsName = "worker.dtb"
	}
	kernelName := b.Raw.FSKernel
	if kernelName == "" {
		kernelName = "uImage"
	}
	fat := []struct {
		name string
		data []byte
	}{
		{"MLO", files["MLO"]},
		{"u-boot.img", files["u-boot.img"]},
		{kernelName, files["uImage"]},
		{argsName, dtb},
		{UEnvFile, []byte(UEnv(kernelName, argsName))},
	}
	total := l.Total
	var payload Region
	if s.Payload != nil {
		payload = Region{"payload partition", l.Total, roundUp64(int64(len(s.Payload)), 1<<20), "after the FAT partition"}
		total = payload.End()
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return Info{}, err
	}
	// The image holds the worker's key: the file is owner-only from the
	// moment it exists (CreateTemp makes a new 0600 file; the chmod also
	// covers an odd umask), so nobody can open it while the key goes in.
	// go-diskfs's own Create would make it 0666 &^ umask.
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return Info{}, fmt.Errorf("image: %w", err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmpName)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return Info{}, fmt.Errorf("image: %w", err)
	}
	if err := tmp.Truncate(total); err != nil {
		tmp.Close()
		return Info{}, fmt.Errorf("image: %w", err)
	}
	d, err := diskfs.OpenBackend(file.New(tmp, false), diskfs.WithSectorSize(diskfs.SectorSize512))
	if err != nil {
		tmp.Close()
		return Info{}, fmt.Errorf("image: %w", err)
	}
	parts := []*mbr.Partition{{Index: 1, Bootable: true, Type: mbr.Fat32LBA,
		Start: uint32(l.FAT.Offset / uboot.SectorSize), Size: uint32(l.FAT.Size / uboot.SectorSize)}}
	if s.Payload != nil {
		parts = append(parts, &mbr.Partition{Index: 2, Type: PayloadTyp,
			Start: uint32(payload.Offset / uboot.SectorSize), Size: uint32(payload.Size / uboot.SectorSize)})
	}
	if err := d.Partition(&mbr.Table{Partitions: parts, LogicalSectorSize: uboot.SectorSize, PhysicalSectorSize: uboot.SectorSize}); err != nil {
		d.Close()
		return Info{}, fmt.Errorf("image partition table: %w", err)
	}
	label := s.Label
	if label == "" {
		label = FATLabel
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: label, Reproducible: true})
	if err != nil {
		d.Close()
		return Info{}, fmt.Errorf("image FAT partition: %w", err)
	}
	for _, f := range fat {
		if err := writeFATFile(fs, f.name, f.data); err != nil {
			d.Close()
			return Info{}, fmt.Errorf("image FAT partition: %s: %w (the %d MiB partition may be too small)", f.name, err, FATSize>>20)
		}
	}
	if s.Payload != nil {
		if _, err := d.WritePartitionContents(2, bytes.NewReader(s.Payload)); err != nil {
			d.Close()
			return Info{}, fmt.Errorf("image payload partition: %w", err)
		}
	}
	if err := d.Close(); err != nil {
		return Info{}, fmt.Errorf("image: %w", err)
	}
	// The raw items go in after go-diskfs is done with the file.
	f, err := os.OpenFile(tmpName, os.O_RDWR, 0)
	if err != nil {
		return Info{}, fmt.Errorf("image: %w", err)
	}
	type rawItem struct {
		r    Region
		data []byte
	}
	raw := []rawItem{{l.UBoot, files["u-boot.img"]}, {l.Args, dtb}, {l.Kernel, files["uImage"]}}
	if s.Key != nil {
		raw = append(raw, rawItem{l.Key, protocol.EncodeCardKey(s.Key)})
	}
	for _, m := range l.MLO {
		raw = append(raw, rawItem{m, files["MLO"]})
	}
	for _, it := range raw {
		if _, err := rawWriteAt(f, it.data, it.r.Offset); err != nil {
			f.Close()
			return Info{}, fmt.Errorf("image: write %s: %w", it.r.Name, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return Info{}, err
	}
	h := sha256.New()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return Info{}, err
	}
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return Info{}, err
	}
	if err := f.Close(); err != nil {
		return Info{}, err
	}
	// The DTB is the only per-worker content: in the args area, and as the
	// FAT file (same size for every worker, so the FAT metadata is the same).
	fatOff, err := locate(tmpName, l.FAT, dtb)
	if err != nil {
		return Info{}, err
	}
	personal := []Region{
		{Name: "device tree (args area)", Offset: l.Args.Offset, Size: int64(len(dtb)), Source: l.Args.Source},
		{Name: "device tree (FAT file " + argsName + ")", Offset: fatOff, Size: int64(len(dtb)), Source: "FAT partition"},
	}
	if s.Key != nil {
		personal = append(personal, l.Key)
	}
	if s.Payload != nil {
		personal = append(personal, Region{Name: "payload", Offset: payload.Offset, Size: payload.Size})
	}
	if err := os.Rename(tmpName, out); err != nil {
		return Info{}, fmt.Errorf("image: %w", err)
	}
	ok = true
	return Info{Path: out, Size: total, SHA256: hex.EncodeToString(h.Sum(nil)), Layout: l, DTB: dtb, Personal: personal, Payload: payload}, nil
}

func writeFATFile(fs filesystem.FileSystem, name string, data []byte) error {
	f, err := fs.OpenFile("/"+name, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// locate finds the offset of data inside region r of the image file.
func locate(path string, r Region, data []byte) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, r.Size)
	if _, err := f.ReadAt(buf, r.Offset); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	i := bytes.Index(buf, data)
	if i < 0 {
		return 0, fmt.Errorf("image: the device tree was not found in the %s after writing it", r.Name)
	}
	return r.Offset + int64(i), nil
}

// UEnv is the uEnv.txt U-Boot proper imports in the fallback boot
// (configs/u-boot/2023.01/am335x-falcon.config's bootcmd runs envboot for mmc 0 and
// 1): it loads the same kernel and device tree falcon mode would, takes the
// bootargs from the device tree (so they live in one place), and boots.
func UEnv(kernel, dtb string) string {
	return "# MicroFaaS fallback boot (U-Boot proper): the same kernel and device tree as falcon mode.\n" +
		"uenvcmd=fatload mmc ${mmcdev}:1 ${loadaddr} " + kernel + "; fatload mmc ${mmcdev}:1 ${fdtaddr} " + dtb +
		"; fdt addr ${fdtaddr}; fdt get value bootargs /chosen bootargs; bootm ${loadaddr} - ${fdtaddr}\n"
}

// checkMLO checks for the AM335x ROM's table of contents: its first entry
// names the "CHSETTINGS" item (U-Boot's MLO starts with it).
func checkMLO(b []byte) error {
	if len(b) < 0x208 || !bytes.Equal(b[0x14:0x14+10], []byte("CHSETTINGS")) {
		return errors.New("not an AM335x MLO: no CHSETTINGS table of contents at its start")
	}
	return nil
}

// checkKernelMemory checks that the booting kernel cannot overwrite the
// device tree SPL placed at argsAddr: the zImage runs at the uImage's load
// address, decompresses the kernel there and, to do so, first copies itself
// past the decompressed end (arch/arm/boot/compressed/head.S).
func checkKernelMemory(uimage []byte, argsAddr uint64) error {
	h, err := ParseUImage(uimage)
	if err != nil {
		return err
	}
	z, err := ParseZImage(uimage[UImageHeaderSize:])
	if err != nil {
		return err
	}
	if z.Inflated == 0 {
		return nil // no size table: nothing to check
	}
	// decompressed image + BSS, then the relocated zImage with its stack and
	// 64 KiB malloc area (head.S), rounded generously.
	end := uint64(h.Load) + uint64(z.Inflated) + uint64(z.BSS) + uint64(z.Size) + 1<<20
	if argsAddr != 0 && argsAddr > uint64(h.Load) && end > argsAddr {
		return fmt.Errorf("the kernel decompresses to %#x..%#x, over the device tree SPL loads at %#x (CONFIG_SYS_SPL_ARGS_ADDR): make the kernel or initramfs smaller or move the args address",
			h.Load, end, argsAddr)
	}
	return nil
}

func roundUp64(n, to int64) int64 { return (n + to - 1) / to * to }
