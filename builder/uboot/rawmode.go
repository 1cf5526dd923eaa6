package uboot

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/microfaas/microfaas/kernel"
)

// SectorSize is the MMC block size U-Boot's raw-mode sector numbers count in.
const SectorSize = 512

// RawMode is where the U-Boot build expects things on the SD card or eMMC,
// read from its final .config. The image layout follows these numbers.
type RawMode struct {
	// UBootSector is where SPL loads u-boot.img from
	// (CONFIG_SYS_MMCSD_RAW_MODE_U_BOOT_SECTOR).
	UBootSector int64
	// ArgsSector and ArgsSectors are the falcon-mode argument area: SPL reads
	// exactly ArgsSectors sectors from ArgsSector to ArgsAddr
	// (CONFIG_SYS_MMCSD_RAW_MODE_ARGS_SECTOR, _ARGS_SECTORS, CONFIG_SYS_SPL_ARGS_ADDR).
	ArgsSector, ArgsSectors int64
	ArgsAddr                uint64
	// KernelSector is where SPL reads the kernel's legacy image
	// (CONFIG_SYS_MMCSD_RAW_MODE_KERNEL_SECTOR).
	KernelSector int64
	// Env are the byte ranges U-Boot proper's saveenv writes on the MMC
	// (CONFIG_ENV_OFFSET, _OFFSET_REDUND, CONFIG_ENV_SIZE), if the
	// environment lives in raw MMC; nothing may be placed there.
	Env []Range
	// FSKernel and FSArgs are the file names SPL loads in falcon mode when
	// the ROM booted it from the FAT partition (CONFIG_SPL_FS_LOAD_*_NAME);
	// empty without SPL FAT support.
	FSKernel, FSArgs string
	// CRCCheck says whether SPL checks the uImage's data CRC.
	CRCCheck bool
}

// Range is a byte range on the medium.
type Range struct {
	Name         string
	Offset, Size int64
}

// ReadRawMode reads the raw-mode layout from a U-Boot build's .config.
func ReadRawMode(configPath string) (RawMode, error) {
	cfg, err := kernel.ReadConfig(configPath)
	if err != nil {
		return RawMode{}, fmt.Errorf("u-boot config: %w", err)
	}
	return rawModeFrom(cfg, configPath)
}

func rawModeFrom(cfg kernel.Fragment, name string) (RawMode, error) {
	var errs []string
	need := func(sym string) int64 {
		v, ok := cfg[sym]
		if !ok || v == "n" {
			errs = append(errs, sym+" is not set")
			return 0
		}
		n, err := strconv.ParseInt(v, 0, 64)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s=%s is not a number", sym, v))
		}
		return n
	}
	for _, sym := range []string{"CONFIG_SPL_OS_BOOT", "CONFIG_SPL_FALCON_BOOT_MMCSD", "CONFIG_SPL_LEGACY_IMAGE_FORMAT",
		"CONFIG_SYS_MMCSD_RAW_MODE_U_BOOT_USE_SECTOR"} {
		if cfg[sym] != "y" {
			errs = append(errs, sym+" is not y: falcon mode from raw MMC sectors needs it")
		}
	}
	if cfg["CONFIG_SPL_ENV_SUPPORT"] == "y" {
		errs = append(errs, "CONFIG_SPL_ENV_SUPPORT=y: SPL would boot U-Boot proper unless a saved environment says boot_os=1")
	}
	r := RawMode{
		UBootSector:  need("CONFIG_SYS_MMCSD_RAW_MODE_U_BOOT_SECTOR"),
		ArgsSector:   need("CONFIG_SYS_MMCSD_RAW_MODE_ARGS_SECTOR"),
		ArgsSectors:  need("CONFIG_SYS_MMCSD_RAW_MODE_ARGS_SECTORS"),
		KernelSector: need("CONFIG_SYS_MMCSD_RAW_MODE_KERNEL_SECTOR"),
		ArgsAddr:     uint64(need("CONFIG_SYS_SPL_ARGS_ADDR")),
		FSKernel:     unquote(cfg["CONFIG_SPL_FS_LOAD_KERNEL_NAME"]),
		FSArgs:       unquote(cfg["CONFIG_SPL_FS_LOAD_ARGS_NAME"]),
		CRCCheck:     cfg["CONFIG_SPL_LEGACY_IMAGE_CRC_CHECK"] == "y",
	}
	if cfg["CONFIG_ENV_IS_IN_MMC"] == "y" {
		size := need("CONFIG_ENV_SIZE")
		r.Env = append(r.Env, Range{"U-Boot environment (CONFIG_ENV_OFFSET)", need("CONFIG_ENV_OFFSET"), size})
		if cfg["CONFIG_SYS_REDUNDAND_ENVIRONMENT"] == "y" {
			r.Env = append(r.Env, Range{"U-Boot redundant environment (CONFIG_ENV_OFFSET_REDUND)", need("CONFIG_ENV_OFFSET_REDUND"), size})
		}
	}
	if len(errs) > 0 {
		return r, fmt.Errorf("%s: not a falcon-mode U-Boot build:\n  %s", name, strings.Join(errs, "\n  "))
	}
	return r, nil
}

func unquote(s string) string {
	if u, err := strconv.Unquote(s); err == nil {
		return u
	}
	return s
}
