package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/builder/image"
	"github.com/microfaas/microfaas/cluster"
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
	switch {
	case *clusterFile == "":
		return errors.New("--cluster FILE is required")
	case *out == "":
		return errors.New("--out is required")
	case *all == (*worker != ""):
		return errors.New("give either --worker ID or --all")
	case *all && medium == builder.MediumFlasher:
		return errors.New("flasher images are written one worker at a time: --worker ID")
	}
	cl, err := cluster.Load(*clusterFile)
	if err != nil {
		return err
	}
	var reqs []builder.ImageRequest
	if *all {
		for _, w := range cl.Workers {
			if w.Kind == cluster.KindBBB {
				reqs = append(reqs, builder.ImageRequest{Medium: medium, Worker: w.ID, Debug: *debug,
					Out: filepath.Join(*out, w.ID+"-"+medium+".img")})
			}
		}
		if len(reqs) == 0 {
			return fmt.Errorf("%s has no BeagleBone (kind bbb) workers", *clusterFile)
		}
	} else {
		reqs = []builder.ImageRequest{{Medium: medium, Worker: *worker, Out: *out, Debug: *debug}}
	}
	// Check the workers before the (possibly long) build.
	for _, r := range reqs {
		if _, err := image.LookupBBB(cl, r.Worker); err != nil {
			return err
		}
	}
	o, err := c.options()
	if err != nil {
		return err
	}
	o.Debug = *debug
	if *debug && *build == "out/arm" {
		*build = "out/arm-debug" // keep the normal build's files apart
	}
	bbb, err := builder.BuildBBB(ctx, o, *build)
	if err != nil {
		return err
	}
	infos, err := builder.WriteImages(cl, bbb.Boot, reqs)
	if len(infos) > 0 && c.verbose {
		fmt.Println("layout (from the U-Boot build's .config and the AM335x ROM):")
		for _, r := range infos[0].Layout.Regions() {
			fmt.Printf("  %#9x  %9d bytes  %-26s %s\n", r.Offset, r.Size, r.Name, r.Source)
		}
	}
	for _, info := range infos {
		fmt.Printf("%s  %d bytes  sha256 %s\n", info.Path, info.Size, info.SHA256)
	}
	return err
}
