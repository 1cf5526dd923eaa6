package kernel

import (
	"errors"
	"reflect"
	"testing"

	"github.com/microfaas/microfaas/target"
)

// TestArchFor pins the kernel builds the target table yields: name, base,
// fragments and make targets are part of every cache key, so a change here
// is a new kernel for everyone.
func TestArchFor(t *testing.T) {
	for _, tc := range []struct {
		t    *target.Target
		want Arch
	}{
		{target.X86, Arch{Name: target.X86.Name, KArch: target.X86.KernelARCH, Base: "tinyconfig",
			Fragments: []string{"common.config", "x86_64-microvm.config"},
			Targets:   []string{"bzImage"},
			Outputs:   []Output{{"bzImage", "arch/x86/boot/bzImage"}, {"vmlinux", "vmlinux"}}}},
		{target.ARMv7, Arch{Name: target.ARMv7.Name, KArch: target.ARMv7.KernelARCH, CrossCompile: target.ARMv7.CrossCompile, Base: "tinyconfig",
			Fragments: []string{"common.config", "armv7.config"},
			Targets:   []string{"zImage", BoneBlackDTB},
			Outputs:   []Output{{"zImage", "arch/arm/boot/zImage"}, {BoneBlackDTB, "arch/arm/boot/dts/" + BoneBlackDTB}}}},
	} {
		if got := ArchFor(tc.t); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ArchFor(%s) = %+v\nwant %+v", tc.t, got, tc.want)
		}
	}
}

func TestValidBase(t *testing.T) {
	for _, tt := range []struct {
		base string
		ok   bool
	}{
		{"tinyconfig", true}, {"defconfig", true}, {"x86_64_defconfig", true}, {"multi_v7_defconfig", true},
		{"", false}, {"_defconfig", false}, {"../x_defconfig", false}, {"x_defconfig V=1", false}, {"oldconfig", false},
	} {
		if err := ValidBase(tt.base); (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrBase)) {
			t.Errorf("ValidBase(%q) = %v, want ok %v", tt.base, err, tt.ok)
		}
	}
}
