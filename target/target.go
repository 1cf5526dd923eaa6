// Package target is the one table of per-architecture facts: every place that
// once compared "arm" or "x86" strings reads a field of a *Target instead.
// Targets are compared by pointer (t == target.ARMv7); Parse turns a flag or
// cluster-file value into one.
package target

import (
	"debug/elf"
	"errors"
	"fmt"
	"strings"
)

// Target is one worker architecture.
type Target struct {
	// Name is the value of --arch and of a cluster file's vm.arch.
	Name string
	// Kernel build: the kernel's ARCH=, the CROSS_COMPILE= prefix (empty:
	// native) and the boot image make produces.
	KernelARCH   string
	CrossCompile string
	KernelImage  string
	// KernelFragment is the arch's kconfig fragment in configs/kernel/,
	// applied after common.config.
	KernelFragment string
	// KernelDTBs are device trees built with the kernel (the boards').
	KernelDTBs []string
	// KernelELF: also keep the uncompressed vmlinux (PVH direct boot).
	KernelELF bool
	// InitramfsLinked: the initramfs is built into the kernel image
	// (U-Boot SPL's falcon mode loads a single image), so QEMU gets no -initrd.
	InitramfsLinked bool
	// Go toolchain: GOARCH and GOARM (empty when not ARM).
	GOARCH, GOARM string
	// OCI platform of container-image functions, and the ELF machine every
	// executable put on the worker must have.
	OCIArch, OCIVariant string
	ELF                 elf.Machine
	QEMU                QEMU
}

// QEMU is how a VM worker of a target boots.
type QEMU struct {
	Binary  string // qemu-system-*
	Machine string // -M value
	CPU     string // -cpu value; empty: "host" under KVM, TCGCPU or "max" under TCG
	// TCGCPU, if set, is the -cpu value under TCG when CPU is empty.
	TCGCPU  string
	Devices []string // extra -device values
	Console string   // the kernel's console= device
	// KVM: the guest can run under KVM on this (x86-64) host, so the
	// accelerator is probed; otherwise it is always TCG.
	KVM bool
	// TSC: the guest is x86 and can be told the host TSC frequency under TCG.
	TSC bool
	// Snapshot: the worker can boot from a saved VM (power.BootSnapshot);
	// tested on the microvm only.
	Snapshot bool
	// SessionPort: the worker kernel has virtio-serial
	// (CONFIG_VIRTIO_CONSOLE), so a worker on user networking runs its
	// orchestrator session over a virtio-serial port instead of TCP
	// through a relay (power.SessionPort).
	SessionPort bool
}

// The targets.
var (
	// X86 is the x86-64 QEMU microVM worker.
	X86 = &Target{
		Name: "x86", KernelARCH: "x86", KernelImage: "bzImage",
		KernelFragment: "x86_64-microvm.config", KernelELF: true,
		GOARCH: "amd64", OCIArch: "amd64", ELF: elf.EM_X86_64,
		QEMU: QEMU{
			Binary: "qemu-system-x86_64",
			// acpi=off makes QEMU put the virtio-mmio devices on the kernel
			// command line, which our kernel (no ACPI) reads. rtc=on:
			// without an RTC the kernel's first clock read polled the
			// absent chip for ~1 s of CPU under TCG (docs/performance.md);
			// with it the guest also starts with the host's wall time.
			Machine: "microvm,x-option-roms=off,rtc=on,acpi=off",
			// CPU empty: "host" under KVM. Under TCG "max" has RDRAND
			// (emulated), which lets the kernel seed its RNG at once with
			// random.trust_cpu=on (without it the Go runtime blocks in
			// getrandom for about a second), but its XSAVE made every FPU
			// state switch slow to emulate: without it a worker boots ~7%
			// faster (docs/performance.md). Functions lose AVX, which TCG
			// emulates anyway.
			TCGCPU:  "max,-xsave",
			Console: "ttyS0", KVM: true, TSC: true, Snapshot: true, SessionPort: true,
		},
	}
	// ARMv7 is the BeagleBone Black (AM335x, Cortex-A8) and the same kernel
	// under QEMU's virt machine.
	ARMv7 = &Target{
		Name: "arm", KernelARCH: "arm", CrossCompile: "arm-linux-gnueabihf-", KernelImage: "zImage",
		KernelFragment: "armv7.config", KernelDTBs: []string{"am335x-boneblack.dtb"},
		InitramfsLinked: true,
		GOARCH:          "arm", GOARM: "7", OCIArch: "arm", OCIVariant: "v7", ELF: elf.EM_ARM,
		QEMU: QEMU{
			Binary: "qemu-system-arm", Machine: "virt", CPU: "cortex-a15",
			// virtio-rng seeds the guest kernel's RNG, so the Go runtime's
			// getrandom does not block at boot (no RDRAND on ARM).
			Devices: []string{"virtio-rng-device"},
			Console: "ttyAMA0",
			// No KVM for 32-bit ARM guests on an x86 host.
		},
	}
)

// All lists the targets, the default first.
var All = []*Target{X86, ARMv7}

// ErrUnknown means a name matches no target.
var ErrUnknown = errors.New("unknown architecture")

// Parse returns the target named s (as in --arch or a cluster file).
func Parse(s string) (*Target, error) {
	for _, t := range All {
		if t.Name == s {
			return t, nil
		}
	}
	return nil, fmt.Errorf("%w %q: want %s", ErrUnknown, s, Names())
}

// Names lists the target names for help texts and errors: "x86 or arm".
func Names() string {
	n := make([]string, len(All))
	for i, t := range All {
		n[i] = t.Name
	}
	return strings.Join(n, " or ")
}

func (t *Target) String() string { return t.Name }

// CPUFor is the -cpu value for the accelerator in use.
func (q QEMU) CPUFor(accel string) string {
	switch {
	case q.CPU != "":
		return q.CPU
	case accel == "kvm":
		return "host"
	case q.TCGCPU != "":
		return q.TCGCPU
	}
	return "max"
}

// Flag is a flag.Value holding a target: fs.Var(&target.Flag{T: &t}, ...).
type Flag struct{ T **Target }

func (f Flag) String() string {
	if f.T == nil || *f.T == nil {
		return ""
	}
	return (*f.T).Name
}

// Set parses a flag value.
func (f Flag) Set(s string) error {
	t, err := Parse(s)
	if err != nil {
		return err
	}
	*f.T = t
	return nil
}
