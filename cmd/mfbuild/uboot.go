package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/microfaas/microfaas/builder/uboot"
	"github.com/microfaas/microfaas/internal/cache"
)

func runUBoot(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mfbuild uboot", flag.ContinueOnError)
	var c common
	c.registerBase(fs) // U-Boot has no kernel or architecture to choose
	src := fs.String("uboot-source", "", "folder holding Debian's u-boot source files (apt-get source --download-only), checked against the recipe's pins; default: fetch them into the cache")
	out := fs.String("out", "", "also copy MLO, u-boot.img and the .config into this folder")
	if err := parse(fs, args); err != nil {
		return err
	}
	o, err := c.options()
	if err != nil {
		return err
	}
	r, err := uboot.Build(ctx, uboot.Options{RepoDir: o.RepoDir, Cache: o.Cache, Jobs: o.Jobs, Log: o.Log, SourceDir: *src, Locked: o.Locked})
	if err != nil {
		return err
	}
	for _, f := range r.Manifest.Outputs {
		fmt.Printf("%-10s %s  %8d bytes  sha256 %s\n", f.Name, r.Output(f.Name), f.Size, f.SHA256)
	}
	if r.Cached {
		fmt.Printf("u-boot %s (cached)\n", r.Manifest.Version)
	} else {
		fmt.Printf("u-boot %s (built in %.0f s)\n", r.Manifest.Version, r.Manifest.BuildSecs)
	}
	raw, err := uboot.ReadRawMode(r.Output(uboot.Config))
	if err != nil {
		return err
	}
	fmt.Printf("falcon raw mode: u-boot.img at sector %#x, args at sector %#x (%#x sectors, loaded to %#x), kernel at sector %#x\n",
		raw.UBootSector, raw.ArgsSector, raw.ArgsSectors, raw.ArgsAddr, raw.KernelSector)
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return err
		}
		for _, f := range []string{uboot.MLO, uboot.UBoot, uboot.Config, "manifest.json"} {
			if err := cache.CopyFile(filepath.Join(*out, f), r.Output(f), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}
