package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/microfaas/microfaas/builder"
)

func runWorker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mfbuild worker", flag.ContinueOnError)
	var c common
	c.register(fs)
	c.registerBuiltins(fs)
	fs.Var(&c.functions, "function", "add a user function: name=path (a static executable or /bin/sh script) or name=oci:IMAGE (registry reference, OCI layout folder or docker-save tarball); repeatable")
	out := fs.String("out", "", "output folder (default out/ARCH)")
	if err := parse(fs, args); err != nil {
		return err
	}
	w, _, err := buildWorker(ctx, &c, *out)
	if err != nil {
		return err
	}
	printWorker(w)
	return nil
}

// buildWorker builds kernel and initramfs into out (default out/ARCH).
func buildWorker(ctx context.Context, c *common, out string) (builder.BootFiles, builder.Options, error) {
	if out == "" {
		out = "out/" + c.arch.Name
	}
	o, err := c.options()
	if err != nil {
		return builder.BootFiles{}, o, err
	}
	w, err := builder.BuildWorker(ctx, o, out)
	return w, o, err
}

func printWorker(w builder.BootFiles) {
	k := w.KernelInfo.Manifest
	fmt.Printf("kernel    %s  linux %s  %d bytes  sha256 %s (cached: %v)\n", w.Kernel, k.Version, k.Outputs[0].Size, k.Outputs[0].SHA256, w.KernelInfo.Cached)
	fmt.Printf("initramfs %s  %d bytes  sha256 %s\n", w.Initramfs, w.InitInfo.Size, w.InitInfo.SHA256)
}
