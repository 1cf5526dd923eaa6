package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"

	"github.com/microfaas/microfaas/builder"
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
	return builder.KernelStep(ctx, o, *out, os.Stdout)
}

// fragFlags collects repeated --fragment flags.
type fragFlags []string

func (f *fragFlags) String() string     { return "" }
func (f *fragFlags) Set(v string) error { *f = append(*f, v); return nil }
