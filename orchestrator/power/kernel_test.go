package power

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/target"
)

// note encodes one ELF note (little endian, 4-byte aligned).
func note(owner string, typ uint32, desc []byte) []byte {
	pad := func(b []byte) []byte {
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	name := append([]byte(owner), 0)
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(name)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(desc)))
	b = binary.LittleEndian.AppendUint32(b, typ)
	b = append(b, pad(name)...)
	return append(b, pad(append([]byte(nil), desc...))...)
}

func TestHasNote(t *testing.T) {
	entry := []byte{0xf0, 0x05, 0x00, 0x01}
	tests := []struct {
		name  string
		notes []byte
		want  bool
	}{
		{"pvh note alone", note("Xen", 18, entry), true},
		{"after other notes", append(note("GNU", 3, make([]byte, 20)), note("Xen", 18, entry)...), true},
		{"xen note of another type", note("Xen", 17, entry), false},
		{"type 18 of another owner", note("Linux", 18, entry), false},
		{"truncated", note("Xen", 18, entry)[:14], false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hasNote(tt.notes, binary.LittleEndian, "Xen", xenElfNotePhys32Entry); got != tt.want {
				t.Fatalf("hasNote = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestBootKernel: a vmlinux beside the bzImage boots only when it has the
// PVH entry; the real worker kernel's vmlinux (from the build cache) must.
func TestBootKernel(t *testing.T) {
	self, err := os.Executable() // an ELF without a PVH note
	if err != nil {
		t.Fatal(err)
	}
	noPVH := t.TempDir()
	bz := filepath.Join(noPVH, "bzImage")
	os.WriteFile(bz, []byte("not a kernel"), 0o644)
	if got := BootKernel(target.X86, bz, nil); got != bz {
		t.Errorf("no vmlinux: got %s", got)
	}
	if err := cache.CopyFile(filepath.Join(noPVH, VMLinux), self, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := BootKernel(target.X86, bz, nil); got != bz {
		t.Errorf("vmlinux without PVH entry: got %s, want the bzImage", got)
	}
	if got := BootKernel(target.ARMv7, bz, nil); got != bz {
		t.Errorf("arm: got %s", got)
	}

	// The worker kernel as mfbuild builds it (skipped before the first build).
	vs, _ := filepath.Glob(filepath.Join(cache.DefaultDir(), "kernel", "*", VMLinux))
	if len(vs) == 0 {
		t.Skip("no built x86 kernel in the cache (mfbuild worker --arch x86)")
	}
	for _, v := range vs {
		if !HasPVHEntry(v) {
			t.Errorf("%s: no PVH entry; the x86 fragment sets CONFIG_PVH=y", v)
		}
		withPVH := t.TempDir()
		os.Symlink(v, filepath.Join(withPVH, VMLinux))
		bz := filepath.Join(withPVH, "bzImage")
		if got := BootKernel(target.X86, bz, nil); got != filepath.Join(withPVH, VMLinux) {
			t.Errorf("PVH vmlinux beside the bzImage: got %s", got)
		}
	}
}
