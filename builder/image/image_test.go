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
	"testing"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/builder/uboot"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/runtime"
)

// am335xRaw is U-Boot 2023.01 am335x_evm's raw mode (as read from its
// .config by the real build; the builder tests check the real one).
var am335xRaw = uboot.RawMode{UBootSector: 0x300, ArgsSector: 0x1500, ArgsSectors: 0x200, KernelSector: 0x1700,
	ArgsAddr: 0x88000000, FSKernel: "uImage", FSArgs: "args"}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s missing: make deps installs it", tool)
			}
			t.Skipf("%s missing (make deps)", tool)
		}
	}
}

// fakeBoot writes stand-ins for the build outputs: an MLO with the ROM's
// table of contents and GP header, a u-boot.img, a uImage around a
// zImage-shaped payload of kernelSize bytes, and a DTB compiled by dtc.
func fakeBoot(t *testing.T, kernelSize int) Boot {
	t.Helper()
	needTools(t, "dtc")
	dir := t.TempDir()
	mlo := make([]byte, 0x208+50000)
	copy(mlo[0x14:], "CHSETTINGS")
	binary.LittleEndian.PutUint32(mlo[0x200:], uint32(len(mlo)-0x200))
	binary.LittleEndian.PutUint32(mlo[0x204:], 0x402f0400)
	for i := 0x208; i < len(mlo); i++ {
		mlo[i] = byte(i)
	}
	ub := bytes.Repeat([]byte("u-boot proper "), 40000)
	u, err := EncodeUImage(UImage{Load: KernelLoadARM, Entry: KernelLoadARM, OS: OSLinux, Arch: ArchARM, Type: TypeKernel, Name: "fake"},
		fakeZImage(kernelSize, uint32(3*kernelSize), 100000))
	if err != nil {
		t.Fatal(err)
	}
	dts := filepath.Join(dir, "board.dts")
	os.WriteFile(dts, []byte(`/dts-v1/;
/ { model = "test board"; compatible = "ti,am335x-bone-black";
    #address-cells = <1>; #size-cells = <1>;
    chosen { stdout-path = "/serial@0"; };
    memory@80000000 { device_type = "memory"; reg = <0x80000000 0x20000000>; };
    serial@0 { compatible = "ns16550a"; reg = <0x0 0x100>; };
};`), 0o644)
	dtb := filepath.Join(dir, "board.dtb")
	if out, err := exec.Command("dtc", "-I", "dts", "-O", "dtb", "-o", dtb, dts).CombinedOutput(); err != nil {
		t.Fatalf("dtc: %v\n%s", err, out)
	}
	b := Boot{MLO: filepath.Join(dir, "MLO"), UBootImg: filepath.Join(dir, "u-boot.img"), UImage: filepath.Join(dir, "uImage"), DTB: dtb, Raw: am335xRaw}
	os.WriteFile(b.MLO, mlo, 0o644)
	os.WriteFile(b.UBootImg, ub, 0o644)
	os.WriteFile(b.UImage, u, 0o644)
	return b
}

func testCluster(t *testing.T, n int) *cluster.Cluster {
	t.Helper()
	var w strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&w, "  - {id: bbb%d, kind: bbb, ip: 192.168.1.%d, power: {chip: gpiochip1, line: %d}}\n", i, 10+i*11, i)
	}
	c, err := cluster.Parse([]byte(`
network: {subnet: 192.168.1.0/24, gateway: 192.168.1.1, orchestrator: 192.168.1.2}
secret: 000102030405060708090a0b0c0d0e0f
workers:
`+w.String()), ".")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLayoutAM335x(t *testing.T) {
	l, err := NewLayout(am335xRaw)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.MLO) != 2 || l.MLO[0].Offset != 0x20000 || l.MLO[1].Offset != 0x40000 {
		t.Errorf("MLO copies at %+v, want 0x20000 and 0x40000 (0x0 is the MBR, 0x60000 u-boot.img)", l.MLO)
	}
	if l.UBoot.Offset != 0x60000 || l.UBoot.End() != 0x2a0000 {
		t.Errorf("u-boot.img area %#x..%#x", l.UBoot.Offset, l.UBoot.End())
	}
	if l.Args.Offset != 0x2a0000 || l.Args.Size != 0x40000 || l.Kernel.Offset != 0x2e0000 || l.Kernel.End() != l.Key.Offset {
		t.Errorf("args %+v kernel %+v", l.Args, l.Kernel)
	}
	if l.Key.Offset != FATStart-4096 || l.Key.End() != FATStart {
		t.Errorf("worker key area %+v: want the 4 KiB before the FAT partition", l.Key)
	}
	if l.Total != FATStart+FATSize {
		t.Errorf("total %d", l.Total)
	}
}

func TestLayoutErrors(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*uboot.RawMode)
		wantErr string
	}{
		{"args over kernel", func(r *uboot.RawMode) { r.ArgsSectors = 0x300 }, "overlaps uImage"},
		{"kernel past FAT", func(r *uboot.RawMode) { r.KernelSector = FATStart/512 + 8 }, "overlaps"},
		{"args on MBR", func(r *uboot.RawMode) { r.ArgsSector = 0 }, "overlaps"},
		{"everything on the ROM slots", func(r *uboot.RawMode) { r.UBootSector = 0x100; r.ArgsSector = 0x200; r.ArgsSectors = 0x200 }, "no AM335x ROM raw-mode offset"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := am335xRaw
			tc.mod(&r)
			if _, err := NewLayout(r); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestWriteAndVerify writes an image from stand-in inputs and checks it with
// the real tools (Verify: mkimage, fdtget, fsck.fat, mtools), then twice
// more to check it is byte-for-byte reproducible.
func TestWriteAndVerify(t *testing.T) {
	needTools(t, "mkimage", "fdtget", "fsck.fat", "mdir", "mtype")
	b := fakeBoot(t, 3<<20)
	c := testCluster(t, 1)
	w, _ := c.Worker("bbb0")
	args, err := Bootargs(c, w, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"console=ttyS0,115200n8", "ip=192.168.1.10::192.168.1.1:255.255.255.0:bbb0:eth0:off",
		"mf.id=bbb0", "mf.orch=192.168.1.2:63302", "mf.off=poweroff", "pty.legacy_count=0", "lpj=4980736"} {
		if !strings.Contains(args, want) {
			t.Errorf("bootargs %q lack %q", args, want)
		}
	}
	// The cluster secret never goes in bootargs (the worker's own key is
	// in the card's key area).
	if strings.Contains(args, "mf.secret") || strings.Contains(args, "000102030405060708090a0b0c0d0e0f") {
		t.Errorf("bootargs %q carry the cluster secret", args)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "bbb0.img")
	info, err := Write(out, b, Spec{Bootargs: args})
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(out, b, info, args); err != nil {
		t.Fatal(err)
	}
	// Verify must catch a damaged image, or it proves nothing.
	img, _ := os.ReadFile(out)
	img[info.Layout.Kernel.Offset+5000] ^= 0xff
	bad := filepath.Join(dir, "bad.img")
	os.WriteFile(bad, img, 0o644)
	if err := Verify(bad, b, info, args); err == nil || !strings.Contains(err.Error(), "uImage") {
		t.Fatalf("a flipped kernel byte went unnoticed: %v", err)
	}
	again, err := Write(filepath.Join(dir, "again.img"), b, Spec{Bootargs: args})
	if err != nil {
		t.Fatal(err)
	}
	if again.SHA256 != info.SHA256 {
		t.Fatalf("two images of the same inputs differ: %s vs %s", info.SHA256, again.SHA256)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 3 {
		t.Fatalf("left behind: %v", ents)
	}
}

// TestImagesDifferOnlyInPersonalData writes images for ten workers and
// compares each with the first: every differing byte must lie in a region
// the writer declares personal (the DTB in the args area and its FAT copy).
func TestImagesDifferOnlyInPersonalData(t *testing.T) {
	b := fakeBoot(t, 1<<20)
	c := testCluster(t, 10)
	dir := t.TempDir()
	var first []byte
	var firstInfo Info
	for i, w := range c.Workers {
		args, err := Bootargs(c, w, false)
		if err != nil {
			t.Fatal(err)
		}
		info, err := Write(filepath.Join(dir, w.ID+".img"), b, Spec{Bootargs: args})
		if err != nil {
			t.Fatal(err)
		}
		img, _ := os.ReadFile(info.Path)
		if i == 0 {
			first, firstInfo = img, info
			continue
		}
		if len(img) != len(first) {
			t.Fatalf("%s: %d bytes, %s: %d", w.ID, len(img), c.Workers[0].ID, len(first))
		}
		diffs := 0
		for off := range img {
			if img[off] == first[off] {
				continue
			}
			diffs++
			in := false
			for _, r := range append(info.Personal, firstInfo.Personal...) {
				if int64(off) >= r.Offset && int64(off) < r.End() {
					in = true
				}
			}
			if !in {
				t.Fatalf("%s differs from %s at %#x, outside its personal data %+v", w.ID, c.Workers[0].ID, off, info.Personal)
			}
		}
		if diffs == 0 {
			t.Fatalf("%s's image is identical to %s's", w.ID, c.Workers[0].ID)
		}
	}
}

// TestWriteRejects checks each bad input gives an error naming what is wrong
// and leaves no file behind.
func TestWriteRejects(t *testing.T) {
	c := testCluster(t, 1)
	w, _ := c.Worker("bbb0")
	args, _ := Bootargs(c, w, false)
	tests := []struct {
		name    string
		boot    func(t *testing.T) Boot
		spec    Spec
		wantErr string
	}{
		{"kernel too large", func(t *testing.T) Boot { return fakeBoot(t, 14<<20) }, Spec{Bootargs: args}, "the kernel uImage is"},
		{"DTB too big for the args area", func(t *testing.T) Boot {
			b := fakeBoot(t, 1<<20)
			b.Raw.ArgsSectors = 8 // 4 KiB
			return b
		}, Spec{Bootargs: args}, "the device tree is"},
		{"u-boot.img too big", func(t *testing.T) Boot {
			b := fakeBoot(t, 1<<20)
			os.WriteFile(b.UBootImg, make([]byte, 3<<20), 0o644)
			return b
		}, Spec{Bootargs: args}, "u-boot.img is"},
		{"not an MLO", func(t *testing.T) Boot {
			b := fakeBoot(t, 1<<20)
			os.WriteFile(b.MLO, make([]byte, 4096), 0o644)
			return b
		}, Spec{Bootargs: args}, "not an AM335x MLO"},
		{"not a uImage", func(t *testing.T) Boot {
			b := fakeBoot(t, 1<<20)
			os.WriteFile(b.UImage, make([]byte, 4096), 0o644)
			return b
		}, Spec{Bootargs: args}, "not a legacy U-Boot image"},
		{"kernel over the DTB in memory", func(t *testing.T) Boot {
			b := fakeBoot(t, 1<<20)
			b.Raw.ArgsAddr = KernelLoadARM + 2<<20
			return b
		}, Spec{Bootargs: args}, "CONFIG_SYS_SPL_ARGS_ADDR"},
		{"bootargs too long", func(t *testing.T) Boot { return fakeBoot(t, 1<<20) }, Spec{Bootargs: strings.Repeat("x", 2000)}, "command line"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Write(filepath.Join(dir, "x.img"), tc.boot(t), tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("left behind: %v", ents[0].Name())
			}
		})
	}
}

func TestBootargsRejects(t *testing.T) {
	c := testCluster(t, 1)
	w, _ := c.Worker("bbb0")
	outside := w
	outside.IP = "10.0.0.5"
	var fe *cluster.FieldError
	if _, err := Bootargs(c, outside, false); !errors.As(err, &fe) || fe.Field != "ip" || fe.Worker != "bbb0" {
		t.Fatalf("address outside the subnet: %v", err)
	}
	// An id that got past the cluster file (a Cluster built in code) still
	// cannot rewrite ip= or add a parameter.
	var we *WorkerError
	for _, id := range []string{"bbb0:10.0.0.9", "bbb0 init=/bin/sh", "bbb0\nmf.orch=6.6.6.6:1"} {
		evil := w
		evil.ID = id
		if s, err := Bootargs(c, evil, false); !errors.As(err, &we) || !errors.Is(err, bootparams.ErrInvalid) {
			t.Fatalf("id %q: %q, %v; want a WorkerError wrapping bootparams.ErrInvalid", id, s, err)
		}
	}
	if _, err := LookupBBB(c, "bbb7"); !errors.As(err, &we) || we.Field != "id" || !strings.Contains(err.Error(), "bbb0") {
		t.Fatalf("unknown worker: %v", err)
	}
}

func TestPersonaliseDTB(t *testing.T) {
	b := fakeBoot(t, 1<<20)
	dtb, _ := os.ReadFile(b.DTB)
	a, err := PersonaliseDTB(dtb, "console=ttyS0 mf.id=a")
	if err != nil {
		t.Fatal(err)
	}
	z, err := PersonaliseDTB(dtb, "console=ttyS0 mf.id=a-much-longer-worker-name ip=192.168.100.100")
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(z) || len(a)%4096 != 0 {
		t.Fatalf("DTB sizes %d and %d: want equal multiples of 4 KiB", len(a), len(z))
	}
	if got, err := DTBBootargs(z); err != nil || got != "console=ttyS0 mf.id=a-much-longer-worker-name ip=192.168.100.100" {
		t.Fatalf("bootargs read back %q, %v", got, err)
	}
	// The original's stdout-path survives.
	p := filepath.Join(t.TempDir(), "a.dtb")
	os.WriteFile(p, a, 0o644)
	if out, err := exec.Command("fdtget", "-t", "s", p, "/chosen", "stdout-path").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "/serial@0" {
		t.Fatalf("stdout-path: %v %s", err, out)
	}
}

// TestKeyArea: the worker's key lands in the key area, the 4 KiB before the
// FAT partition, where the runtime reads it; the image is owner-only.
func TestKeyArea(t *testing.T) {
	b := fakeBoot(t, 4096)
	key := bytes.Repeat([]byte{0x5a}, protocol.KeySize)
	out := filepath.Join(t.TempDir(), "sd.img")
	info, err := Write(out, b, Spec{Bootargs: "console=ttyS0", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if info.Layout.Key.Offset != protocol.CardKeyOffset || info.Layout.Key.End() != FATStart {
		t.Fatalf("key area %+v, want [%#x, %#x)", info.Layout.Key, protocol.CardKeyOffset, FATStart)
	}
	got, err := runtime.CardKey([]string{filepath.Join(t.TempDir(), "absent"), out})
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("the runtime read %x, %v", got, err)
	}
	fi, _ := os.Stat(out)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("image mode %o, want 0600", fi.Mode().Perm())
	}
	found := false
	for _, r := range info.Personal {
		found = found || r == info.Layout.Key
	}
	if !found {
		t.Errorf("the key area is not listed as personal: %+v", info.Personal)
	}
}

// TestImageOwnerOnlyBeforeKey: the SD/eMMC image holds the worker's key, so
// the file must be owner-only before the first key byte is written, not only
// when it is complete (issue 18, attack 8): a reader who opens it while it is
// being written keeps its descriptor after a late chmod.
func TestImageOwnerOnlyBeforeKey(t *testing.T) {
	b := fakeBoot(t, 4096)
	key := bytes.Repeat([]byte{0xa5}, protocol.KeySize)
	old := rawWriteAt
	defer func() { rawWriteAt = old }()
	var modes []os.FileMode
	rawWriteAt = func(f *os.File, p []byte, off int64) (int, error) {
		fi, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(p, protocol.EncodeCardKey(key)) {
			modes = append(modes, fi.Mode().Perm())
		}
		return old(f, p, off)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "sd.img")
	// An older image at out with loose permissions must not lend them.
	if err := os.WriteFile(out, []byte("old image"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(out, b, Spec{Bootargs: "console=ttyS0", Key: key}); err != nil {
		t.Fatal(err)
	}
	if len(modes) != 1 {
		t.Fatalf("the key was written %d times, want 1", len(modes))
	}
	if modes[0] != 0o600 {
		t.Errorf("image mode %o when the key was written, want 0600", modes[0])
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("finished image mode %o: group or others can read the key", fi.Mode().Perm())
	}
}
