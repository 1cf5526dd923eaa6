package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/target"
)

const imageUsage = `usage:
  mfbuild image sdcard|emmc --cluster FILE --worker ID --out FILE
  mfbuild image sdcard|emmc --cluster FILE --all --out DIR     (one image per BeagleBone worker)
  mfbuild image flasher     --cluster FILE --worker ID --out FILE

A raw image for a BeagleBone Black worker: MLO, u-boot.img, the worker's
device tree and the kernel at the sectors the U-Boot build reads them from
(falcon mode), plus a FAT partition for the fallback boot. The flasher image
boots from SD (hold S2), writes the worker's eMMC image and powers off.
Write an image with: dd if=IMAGE of=/dev/sdX bs=4M conv=fsync (docs/images.md).
`

func runImage(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != builder.MediumSD && args[0] != builder.MediumEMMC && args[0] != builder.MediumFlasher) {
		fmt.Fprint(os.Stderr, imageUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return errors.New("say which image: sdcard, emmc or flasher")
	}
	medium := args[0]
	fs := flag.NewFlagSet("mfbuild image "+medium, flag.ContinueOnError)
	var c common
	c.registerBase(fs) // images are for BeagleBones: always ARM
	c.registerKernel(fs)
	c.registerBuiltins(fs)
	clusterFile := fs.String("cluster", "", "cluster file (configs/cluster.example.yaml documents it)")
	worker := fs.String("worker", "", "worker id")
	all := fs.Bool("all", false, "one image per BeagleBone worker of the cluster file, into the folder --out")
	out := fs.String("out", "", "image file (or folder with --all)")
	build := fs.String("build", "out/arm", "folder for the ARM worker build (zImage, uImage, DTB)")
	debug := fs.Bool("debug", false, "bring-up image: boot messages and a shell (u-root) on the serial console, never on the network; the board stays on until you leave the shell")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	c.arch = target.ARMv7
	if *debug && *build == "out/arm" {
		*build = "out/arm-debug" // keep the normal build's files apart
	}
	set := builder.ImageSet{Medium: medium, ClusterFile: *clusterFile, Worker: *worker, All: *all, Out: *out, Debug: *debug}
	return builder.ImageStep(ctx, set, c.options, *build, c.verbose, os.Stdout)
}
