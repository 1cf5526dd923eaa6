package main

import (
	"context"
	"flag"
	"os"

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
	o, err := c.options()
	if err != nil {
		return err
	}
	_, err = builder.WorkerStep(ctx, o, *out, os.Stdout)
	return err
}
