package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/microfaas/microfaas/builder/image"
	"github.com/microfaas/microfaas/builder/uboot"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/cache"
)

// The steps mfbuild's commands run: build, print what was built to w, and
// copy it where asked. The commands only turn flags into Options.

// KernelStep builds the kernel, prints its outputs, and copies them and
// their manifest into out (if not empty).
func KernelStep(ctx context.Context, o Options, out string, w io.Writer) error {
	k, err := Kernel(ctx, o)
	if err != nil {
		return err
	}
	for _, f := range k.Manifest.Outputs {
		fmt.Fprintf(w, "%-8s %s  %8d bytes  sha256 %s\n", f.Name, k.Output(f.Name), f.Size, f.SHA256)
	}
	fmt.Fprintf(w, "manifest %s (cached: %v)\n", filepath.Join(k.Dir, "manifest.json"), k.Cached)
	if out == "" {
		return nil
	}
	files := []string{"manifest.json"}
	for _, f := range k.Manifest.Outputs { // bzImage; or zImage, uImage and DTB for arm
		if f.Name != "config" {
			files = append(files, f.Name)
		}
	}
	return copyInto(out, k.Output, files)
}

// InitramfsStep writes the worker initramfs to out and prints it.
func InitramfsStep(ctx context.Context, o Options, out string, w io.Writer) error {
	info, err := Initramfs(ctx, o, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "initramfs %s  %d bytes  %d entries  sha256 %s\n", info.Path, info.Size, info.Entries, info.SHA256)
	fmt.Fprintf(w, "init      %d bytes  sha256 %s\n", info.Init.Size, info.Init.SHA256)
	return nil
}

// WorkerStep builds kernel and initramfs into out (default out/ARCH) and
// prints them.
func WorkerStep(ctx context.Context, o Options, out string, w io.Writer) (BootFiles, error) {
	if out == "" {
		out = "out/" + o.Arch.Name
	}
	b, err := BuildWorker(ctx, o, out)
	if err != nil {
		return b, err
	}
	k := b.KernelInfo.Manifest
	fmt.Fprintf(w, "kernel    %s  linux %s  %d bytes  sha256 %s (cached: %v)\n", b.Kernel, k.Version, k.Outputs[0].Size, k.Outputs[0].SHA256, b.KernelInfo.Cached)
	fmt.Fprintf(w, "initramfs %s  %d bytes  sha256 %s\n", b.Initramfs, b.InitInfo.Size, b.InitInfo.SHA256)
	return b, nil
}

// UBootStep builds the BeagleBone bootloader from Debian's sources (in
// src, or fetched into the cache), prints it and its falcon-mode layout,
// and copies it into out (if not empty).
func UBootStep(ctx context.Context, o Options, src, out string, w io.Writer) error {
	r, err := uboot.Build(ctx, uboot.Options{RepoDir: o.RepoDir, Cache: o.Cache, Jobs: o.Jobs, Log: o.Log, SourceDir: src, Locked: o.Locked})
	if err != nil {
		return err
	}
	for _, f := range r.Manifest.Outputs {
		fmt.Fprintf(w, "%-10s %s  %8d bytes  sha256 %s\n", f.Name, r.Output(f.Name), f.Size, f.SHA256)
	}
	if r.Cached {
		fmt.Fprintf(w, "u-boot %s (cached)\n", r.Manifest.Version)
	} else {
		fmt.Fprintf(w, "u-boot %s (built in %.0f s)\n", r.Manifest.Version, r.Manifest.BuildSecs)
	}
	raw, err := uboot.ReadRawMode(r.Output(uboot.Config))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "falcon raw mode: u-boot.img at sector %#x, args at sector %#x (%#x sectors, loaded to %#x), kernel at sector %#x\n",
		raw.UBootSector, raw.ArgsSector, raw.ArgsSectors, raw.ArgsAddr, raw.KernelSector)
	if out == "" {
		return nil
	}
	return copyInto(out, r.Output, []string{uboot.MLO, uboot.UBoot, uboot.Config, "manifest.json"})
}

// copyInto copies the named files (found with path) into the folder out.
func copyInto(out string, path func(string) string, names []string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, f := range names {
		if err := cache.CopyFile(filepath.Join(out, f), path(f), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ImageSet says which images mfbuild image writes.
type ImageSet struct {
	Medium      string // MediumSD, MediumEMMC or MediumFlasher
	ClusterFile string
	Worker      string // one worker's image at Out, or
	All         bool   // one per BeagleBone worker, into the folder Out
	Out         string
	Debug       bool // bring-up image with a serial shell
}

// Requests checks the set against cluster c, before any (long) build,
// and lists its images.
func (s ImageSet) Requests(c *cluster.Cluster) ([]ImageRequest, error) {
	var reqs []ImageRequest
	if s.All {
		for _, w := range c.Workers {
			if w.Kind == cluster.KindBBB {
				reqs = append(reqs, ImageRequest{Medium: s.Medium, Worker: w.ID, Debug: s.Debug,
					Out: filepath.Join(s.Out, w.ID+"-"+s.Medium+".img")})
			}
		}
		if len(reqs) == 0 {
			return nil, fmt.Errorf("%s has no BeagleBone (kind bbb) workers", s.ClusterFile)
		}
	} else {
		reqs = []ImageRequest{{Medium: s.Medium, Worker: s.Worker, Out: s.Out, Debug: s.Debug}}
	}
	for _, r := range reqs {
		if _, err := image.LookupBBB(c, r.Worker); err != nil {
			return nil, err
		}
	}
	return reqs, nil
}

// Check reports a set the flags cannot describe.
func (s ImageSet) Check() error {
	switch {
	case s.ClusterFile == "":
		return errors.New("--cluster FILE is required")
	case s.Out == "":
		return errors.New("--out is required")
	case s.All == (s.Worker != ""):
		return errors.New("give either --worker ID or --all")
	case s.All && s.Medium == MediumFlasher:
		return errors.New("flasher images are written one worker at a time: --worker ID")
	}
	return nil
}

// ImageStep builds the BeagleBone worker into build and writes the set's
// images, printing each (and, if layout, the image's regions). The set is
// checked against its cluster file before options is called.
func ImageStep(ctx context.Context, s ImageSet, options func() (Options, error), build string, layout bool, w io.Writer) error {
	if err := s.Check(); err != nil {
		return err
	}
	c, err := cluster.Load(s.ClusterFile)
	if err != nil {
		return err
	}
	reqs, err := s.Requests(c)
	if err != nil {
		return err
	}
	o, err := options()
	if err != nil {
		return err
	}
	o.Debug = s.Debug
	bbb, err := BuildBBB(ctx, o, build)
	if err != nil {
		return err
	}
	infos, err := WriteImages(c, bbb.Boot, reqs)
	if len(infos) > 0 && layout {
		fmt.Fprintln(w, "layout (from the U-Boot build's .config and the AM335x ROM):")
		for _, r := range infos[0].Layout.Regions() {
			fmt.Fprintf(w, "  %#9x  %9d bytes  %-26s %s\n", r.Offset, r.Size, r.Name, r.Source)
		}
	}
	for _, info := range infos {
		fmt.Fprintf(w, "%s  %d bytes  sha256 %s\n", info.Path, info.Size, info.SHA256)
	}
	return err
}
