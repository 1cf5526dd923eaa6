package builder

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/builder/image"
	"github.com/microfaas/microfaas/builder/uboot"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/kernel"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/target"
)

// Image media.
const (
	MediumSD      = "sdcard"
	MediumEMMC    = "emmc"
	MediumFlasher = "flasher"
)

// BBB is everything a BeagleBone image carries that is the same for every
// worker: the ARM worker (kernel with its initramfs, uImage, DTB) and the
// falcon-mode U-Boot build.
type BBB struct {
	Worker BootFiles
	UBoot  uboot.Result
	Boot   image.Boot
}

// BuildBBB builds (or takes from the cache) the ARM worker into outDir and
// the U-Boot build, and reads the raw-mode layout from U-Boot's .config.
func BuildBBB(ctx context.Context, o Options, outDir string) (BBB, error) {
	o.defaults()
	o.Arch = target.ARMv7
	w, err := BuildWorker(ctx, o, outDir)
	if err != nil {
		return BBB{}, err
	}
	ub, err := uboot.Build(ctx, uboot.Options{RepoDir: o.RepoDir, Cache: o.Cache, Jobs: o.Jobs, Log: o.Log, Locked: o.Locked})
	if err != nil {
		return BBB{}, err
	}
	raw, err := uboot.ReadRawMode(ub.Output(uboot.Config))
	if err != nil {
		return BBB{}, err
	}
	return BBB{Worker: w, UBoot: ub, Boot: image.Boot{
		MLO: ub.Output(uboot.MLO), UBootImg: ub.Output(uboot.UBoot),
		UImage: filepath.Join(outDir, UImageName), DTB: filepath.Join(outDir, kernel.BoneBlackDTB), Raw: raw,
	}}, nil
}

// ImageRequest names one image to write.
type ImageRequest struct {
	Medium string // MediumSD, MediumEMMC or MediumFlasher
	Worker string // worker id
	Out    string // image file
	// Debug leaves the kernel's boot messages on the serial console.
	Debug bool
}

// Flasher device names on the BeagleBone Black: the DT's mmc aliases make the
// SD slot mmcblk0 and the eMMC mmcblk1 whichever booted.
const (
	FlasherSrc = "/dev/mmcblk0p2"
	FlasherDst = "/dev/mmcblk1"
)

// WriteImages checks every request against the cluster first (so a bad
// worker stops the run before any image is written), then writes them.
func WriteImages(c *cluster.Cluster, b image.Boot, reqs []ImageRequest) ([]image.Info, error) {
	var errs []error
	for _, r := range reqs {
		w, err := image.LookupBBB(c, r.Worker)
		if err == nil {
			_, err = image.Bootargs(c, w, r.Debug)
		}
		if err == nil && r.Medium != MediumSD && r.Medium != MediumEMMC && r.Medium != MediumFlasher {
			err = fmt.Errorf("image kind %q: want %s, %s or %s", r.Medium, MediumSD, MediumEMMC, MediumFlasher)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var infos []image.Info
	for _, r := range reqs {
		info, err := WriteImage(c, b, r)
		if err != nil {
			return infos, err
		}
		infos = append(infos, info)
	}
	return infos, nil
}

// WriteImage writes one worker's SD-card, eMMC or flasher image.
func WriteImage(c *cluster.Cluster, b image.Boot, r ImageRequest) (image.Info, error) {
	w, err := image.LookupBBB(c, r.Worker)
	if err != nil {
		return image.Info{}, err
	}
	// For r.Debug, the Boot must carry the debug initramfs (Options.Debug) for the shell.
	args, err := image.Bootargs(c, w, r.Debug)
	if err != nil {
		return image.Info{}, err
	}
	// The worker's own key, in the card's key area (protocol.CardKeyOffset).
	key, err := protocol.WorkerKey(c.SecretBytes(), w.ID)
	if err != nil {
		return image.Info{}, fmt.Errorf("worker %s: %w", w.ID, err)
	}
	switch r.Medium {
	case MediumSD, MediumEMMC:
		// The ROM boots the eMMC's user area exactly as it boots the SD
		// card: the same layout; only the FAT label tells them apart.
		label := "MF-SD"
		if r.Medium == MediumEMMC {
			label = "MF-EMMC"
		}
		info, err := image.Write(r.Out, b, image.Spec{Bootargs: args, Label: label, Key: key})
		if err != nil {
			return info, fmt.Errorf("worker %s: %s image: %w", w.ID, r.Medium, err)
		}
		return info, nil
	case MediumFlasher:
		tmp, err := os.MkdirTemp("", "mfbuild-flasher-")
		if err != nil {
			return image.Info{}, err
		}
		defer os.RemoveAll(tmp)
		emmc, err := image.Write(filepath.Join(tmp, "emmc.img"), b, image.Spec{Bootargs: args, Label: "MF-EMMC", Key: key})
		if err != nil {
			return emmc, fmt.Errorf("worker %s: eMMC image for the flasher: %w", w.ID, err)
		}
		payload, err := os.ReadFile(emmc.Path)
		if err != nil {
			return image.Info{}, err
		}
		fargs, err := image.FlasherBootargs(w, FlasherParams(payload))
		if err != nil {
			return image.Info{}, err
		}
		info, err := image.Write(r.Out, b, image.Spec{Bootargs: fargs, Label: "MF-FLASHER", Payload: payload})
		if err != nil {
			return info, fmt.Errorf("worker %s: flasher image: %w", w.ID, err)
		}
		return info, nil
	}
	return image.Info{}, fmt.Errorf("image kind %q: want %s, %s or %s", r.Medium, MediumSD, MediumEMMC, MediumFlasher)
}

// FlasherParams make a worker write payload (the eMMC image, stored as the
// flasher card's partition 2) to the eMMC.
func FlasherParams(payload []byte) bootparams.Flash {
	return bootparams.Flash{Src: FlasherSrc, Dst: FlasherDst, Size: int64(len(payload)), SHA256: sha(payload)}
}

func sha(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
