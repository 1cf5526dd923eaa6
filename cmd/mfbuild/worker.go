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
	fs.Var(&c.functions, "function", "add a user function executable as name=path (repeatable)")
	out := fs.String("out", "", "output folder (default out/ARCH)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		*out = "out/" + c.arch
	}
	o, err := c.options()
	if err != nil {
		return err
	}
	w, err := builder.BuildWorker(ctx, o, *out)
	if err != nil {
		return err
	}
	printWorker(w)
	return nil
}

func printWorker(w builder.Worker) {
	k := w.KernelInfo.Manifest
	fmt.Printf("kernel    %s  linux %s  %d bytes  sha256 %s (cached: %v)\n", w.Kernel, k.Version, k.Outputs[0].Size, k.Outputs[0].SHA256, w.KernelInfo.Cached)
	fmt.Printf("initramfs %s  %d bytes  sha256 %s\n", w.Initramfs, w.InitInfo.Size, w.InitInfo.SHA256)
}
