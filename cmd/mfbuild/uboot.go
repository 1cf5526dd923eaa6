package main

import (
	"context"
	"flag"
	"os"

	"github.com/microfaas/microfaas/builder"
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
	return builder.UBootStep(ctx, o, *src, *out, os.Stdout)
}
