package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeZImage builds bytes with a valid ARM zImage header and size table, so
// the uImage tests do not need a kernel build.
func fakeZImage(size int, inflated, bss uint32) []byte {
	b := make([]byte, size)
	le := binary.LittleEndian
	le.PutUint32(b[0x24:], zImageMagic)
	le.PutUint32(b[0x28:], 0)
	le.PutUint32(b[0x2c:], uint32(size))
	le.PutUint32(b[0x30:], 0x04030201)
	table := uint32(0x100)
	le.PutUint32(b[0x34:], table)
	le.PutUint32(b[table:], 6)
	le.PutUint32(b[table+4:], zTableMagic)
	le.PutUint32(b[table+8:], uint32(size-4)) // inflated size is stored at the end
	le.PutUint32(b[table+12:], bss)
	le.PutUint32(b[size-4:], inflated)
	for i := 0x200; i < size-4; i++ {
		b[i] = byte(i * 7)
	}
	return b
}

func TestEncodeParseUImage(t *testing.T) {
	data := []byte("a kernel")
	b, err := EncodeUImage(UImage{Load: KernelLoadARM, Entry: KernelLoadARM, OS: OSLinux, Arch: ArchARM, Type: TypeKernel, Name: "x"}, data)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseUImage(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.Load != KernelLoadARM || h.Size != uint32(len(data)) || h.Name != "x" || h.Type != TypeKernel {
		t.Fatalf("round trip: %+v", h)
	}
	tests := []struct {
		name   string
		mangle func([]byte)
	}{
		{"magic", func(b []byte) { b[0] ^= 1 }},
		{"header byte", func(b []byte) { b[20] ^= 1 }},
		{"payload byte", func(b []byte) { b[UImageHeaderSize+1] ^= 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := bytes.Clone(b)
			tc.mangle(c)
			if _, err := ParseUImage(c); !errors.Is(err, ErrNotUImage) {
				t.Fatalf("corrupt %s accepted: %v", tc.name, err)
			}
		})
	}
	if _, err := EncodeUImage(UImage{Name: strings.Repeat("n", 32)}, data); err == nil {
		t.Fatal("a 32-byte name was accepted; the header holds 31 and a NUL")
	}
}

// TestMkimageAcceptsUImage checks our header with U-Boot's own tool.
func TestMkimageAcceptsUImage(t *testing.T) {
	mk, err := exec.LookPath("mkimage")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("mkimage missing: make deps installs u-boot-tools")
		}
		t.Skip("mkimage missing (u-boot-tools)")
	}
	dir := t.TempDir()
	z := filepath.Join(dir, "zImage")
	if err := os.WriteFile(z, fakeZImage(8192, 20000, 300), 0o644); err != nil {
		t.Fatal(err)
	}
	u := filepath.Join(dir, "uImage")
	if err := WriteKernelUImage(z, u, "MicroFaaS worker"); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(mk, "-l", u).CombinedOutput()
	if err != nil {
		t.Fatalf("mkimage -l rejected our uImage: %v\n%s", err, out)
	}
	for _, want := range []string{"Image Name:   MicroFaaS worker", "ARM Linux Kernel Image (uncompressed)",
		"Data Size:    8192 Bytes", "Load Address: 80008000", "Entry Point:  80008000"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("mkimage -l output lacks %q:\n%s", want, out)
		}
	}
	// The same check on a header we corrupt must fail, or the test proves nothing.
	b, _ := os.ReadFile(u)
	b[UImageHeaderSize+100] ^= 0xff
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, b, 0o644)
	// mkimage -l then tries other image types; it must not list a kernel.
	if out, _ := exec.Command(mk, "-l", bad).CombinedOutput(); strings.Contains(string(out), "ARM Linux Kernel Image") {
		t.Fatalf("mkimage accepted a corrupted payload:\n%s", out)
	}
}

func TestParseZImage(t *testing.T) {
	z, err := ParseZImage(fakeZImage(4096, 123456, 789))
	if err != nil {
		t.Fatal(err)
	}
	if z.Size != 4096 || z.Inflated != 123456 || z.BSS != 789 {
		t.Fatalf("%+v", z)
	}
	if _, err := ParseZImage(make([]byte, 4096)); err == nil {
		t.Fatal("zeros parsed as a zImage")
	}
	short := fakeZImage(4096, 1, 1)
	if _, err := ParseZImage(short[:4000]); err == nil {
		t.Fatal("a truncated zImage was accepted")
	}
}
