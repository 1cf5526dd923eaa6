package builder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/microfaas/microfaas/builder/image"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/kernel"
)

// UImageName is the legacy U-Boot image of the ARM kernel, made next to the
// zImage in the kernel's cache entry.
const UImageName = "uImage"

// uimageRevision names how the uImage is made from the zImage; a change to
// builder/image's header writer that changes bytes must change it.
const uimageRevision = "uimage-1"

// armKernelOptions links the worker's initramfs into the ARM kernel and adds
// the uImage to its outputs. If initrd is empty, the initramfs is built into
// a temporary file; the returned cleanup removes it.
func armKernelOptions(ctx context.Context, o Options, ko *kernel.Options, initrd string) (func(), error) {
	cleanup := func() {}
	if initrd == "" {
		tmp, err := os.MkdirTemp("", "mfbuild-arm-initramfs-")
		if err != nil {
			return cleanup, err
		}
		cleanup = func() { os.RemoveAll(tmp) }
		if _, err := Initramfs(ctx, o, filepath.Join(tmp, "initramfs.cpio")); err != nil {
			cleanup()
			return func() {}, fmt.Errorf("initramfs for the ARM kernel: %w", err)
		}
		initrd = filepath.Join(tmp, "initramfs.cpio")
	}
	ko.Initramfs = initrd
	ko.Derive = []kernel.Derivation{{Name: UImageName, Revision: uimageRevision, Make: func(dir string) error {
		return image.WriteKernelUImage(filepath.Join(dir, o.Arch.KernelImage), filepath.Join(dir, UImageName), "MicroFaaS worker")
	}}}
	return cleanup, nil
}

// buildLinkedWorker (targets with InitramfsLinked: ARM) writes the initramfs first, then builds the kernel with it
// linked in, and copies zImage, uImage and the BeagleBone DTB into outDir.
func buildLinkedWorker(ctx context.Context, o Options, outDir string) (BootFiles, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return BootFiles{}, err
	}
	info, err := Initramfs(ctx, o, filepath.Join(outDir, "initramfs.cpio"))
	if err != nil {
		return BootFiles{}, err
	}
	o.initrd = info.Path
	k, err := Kernel(ctx, o)
	if err != nil {
		return BootFiles{}, err
	}
	for _, f := range []string{o.Arch.KernelImage, UImageName, kernel.BoneBlackDTB} {
		if err := cache.CopyFile(filepath.Join(outDir, f), k.Output(f), 0o644); err != nil {
			return BootFiles{}, fmt.Errorf("copy %s: %w", f, err)
		}
	}
	if err := cache.CopyFile(filepath.Join(outDir, "kernel-manifest.json"), filepath.Join(k.Dir, "manifest.json"), 0o644); err != nil {
		return BootFiles{}, err
	}
	return BootFiles{Kernel: filepath.Join(outDir, o.Arch.KernelImage), Initramfs: info.Path, KernelInfo: k, InitInfo: info}, nil
}
