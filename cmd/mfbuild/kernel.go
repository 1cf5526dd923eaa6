package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/internal/cache"
)

func runKernel(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mfbuild kernel", flag.ContinueOnError)
	var c common
	c.register(fs)
	out := fs.String("out", "", "also copy the kernel and its manifest into this folder")
	var frags fragFlags
	fs.Var(&frags, "fragment", "an extra kconfig fragment applied last (repeatable), e.g. configs/kernel/test-gpio-sim.config for the GPIO test kernel")
	base := fs.String("base", "", "base configuration the fragments are applied to (default tinyconfig), e.g. x86_64_defconfig\n"+
		"for the cold-start benchmark's baseline kernel (docs/performance.md)")
	if err := parse(fs, args); err != nil {
		return err
	}
	o, err := c.options()
	if err != nil {
		return err
	}
	o.KernelBase = *base
	for _, f := range frags {
		abs, err := filepath.Abs(f)
		if err != nil {
			return err
		}
		o.KernelFragments = append(o.KernelFragments, abs)
	}
	k, err := builder.Kernel(ctx, o)
	if err != nil {
		return err
	}
	for _, f := range k.Manifest.Outputs {
		fmt.Printf("%-8s %s  %8d bytes  sha256 %s\n", f.Name, k.Output(f.Name), f.Size, f.SHA256)
	}
	fmt.Printf("manifest %s (cached: %v)\n", filepath.Join(k.Dir, "manifest.json"), k.Cached)
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return err
		}
		files := []string{"manifest.json"}
		for _, f := range k.Manifest.Outputs { // bzImage; or zImage, uImage and DTB for arm
			if f.Name != "config" {
				files = append(files, f.Name)
			}
		}
		for _, f := range files {
			if err := cache.CopyFile(filepath.Join(*out, f), k.Output(f), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// fragFlags collects repeated --fragment flags.
type fragFlags []string

func (f *fragFlags) String() string     { return "" }
func (f *fragFlags) Set(v string) error { *f = append(*f, v); return nil }
