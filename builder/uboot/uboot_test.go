package uboot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/source"
	"github.com/microfaas/microfaas/kernel"
)

func repoDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRawModeFrom(t *testing.T) {
	good := kernel.Fragment{
		"CONFIG_SPL_OS_BOOT": "y", "CONFIG_SPL_FALCON_BOOT_MMCSD": "y", "CONFIG_SPL_LEGACY_IMAGE_FORMAT": "y",
		"CONFIG_SYS_MMCSD_RAW_MODE_U_BOOT_USE_SECTOR": "y",
		"CONFIG_SYS_MMCSD_RAW_MODE_U_BOOT_SECTOR":     "0x300", "CONFIG_SYS_MMCSD_RAW_MODE_ARGS_SECTOR": "0x1500",
		"CONFIG_SYS_MMCSD_RAW_MODE_ARGS_SECTORS": "0x200", "CONFIG_SYS_MMCSD_RAW_MODE_KERNEL_SECTOR": "0x1700",
		"CONFIG_SYS_SPL_ARGS_ADDR": "0x88000000", "CONFIG_SPL_FS_LOAD_KERNEL_NAME": `"uImage"`,
		"CONFIG_ENV_IS_IN_MMC": "y", "CONFIG_ENV_SIZE": "0x20000", "CONFIG_ENV_OFFSET": "0x260000",
	}
	with := func(k, v string) kernel.Fragment {
		f := kernel.Fragment{}
		for a, b := range good {
			f[a] = b
		}
		if v == "" {
			delete(f, k)
		} else {
			f[k] = v
		}
		return f
	}
	tests := []struct {
		name    string
		cfg     kernel.Fragment
		wantErr string
	}{
		{"good", good, ""},
		{"no falcon", with("CONFIG_SPL_OS_BOOT", "n"), "CONFIG_SPL_OS_BOOT is not y"},
		{"env in spl", with("CONFIG_SPL_ENV_SUPPORT", "y"), "boot_os=1"},
		{"no kernel sector", with("CONFIG_SYS_MMCSD_RAW_MODE_KERNEL_SECTOR", ""), "KERNEL_SECTOR is not set"},
		{"garbage", with("CONFIG_SYS_MMCSD_RAW_MODE_ARGS_SECTOR", "lots"), "is not a number"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := rawModeFrom(tc.cfg, "test.config")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if r.UBootSector != 0x300 || r.ArgsSector != 0x1500 || r.ArgsSectors != 0x200 || r.KernelSector != 0x1700 ||
					r.ArgsAddr != 0x88000000 || r.FSKernel != "uImage" || len(r.Env) != 1 || r.Env[0].Offset != 0x260000 {
					t.Fatalf("%+v", r)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestConfigureFalcon configures the real U-Boot source with our fragment
// (no compile): every fragment symbol must survive, and the result must be a
// falcon-mode build whose raw-mode numbers ReadRawMode can read.
func TestConfigureFalcon(t *testing.T) {
	if testing.Short() {
		t.Skip("unpacks and configures U-Boot")
	}
	c := cache.Cache{Dir: cache.DefaultDir()}
	rec, err := LoadRecipe(repoDir(t), DefaultSeries)
	if err != nil {
		t.Fatal(err)
	}
	src, err := Fetch(context.Background(), rec, Options{Cache: c})
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	frag, err := os.ReadFile(filepath.Join(repoDir(t), "configs", "u-boot", DefaultSeries, FalconFragment))
	if err != nil {
		t.Fatal(err)
	}
	f, err := kernel.ParseFragment(FalconFragment, strings.NewReader(string(frag)))
	if err != nil {
		t.Fatal(err)
	}
	tree := t.TempDir()
	if err := Prepare(context.Background(), tree, rec.Defconfig, src.Files, []kernel.NamedFragment{{Name: FalconFragment, Fragment: f}}, nil); err != nil {
		t.Fatal(err)
	}
	r, err := ReadRawMode(filepath.Join(tree, ".config"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("raw mode: %+v", r)
	if keep := os.Getenv("MF_KEEP_CONFIG"); keep != "" {
		b, _ := os.ReadFile(filepath.Join(tree, ".config"))
		os.WriteFile(keep, b, 0o644)
	}
}

// TestFetchRejectsCorrupt checks a source file that does not hash to its
// pin is refused, naming the file.
func TestFetchRejectsCorrupt(t *testing.T) {
	dir := t.TempDir()
	r, err := LoadRecipe(repoDir(t), DefaultSeries)
	if err != nil {
		t.Fatal(err)
	}
	r.Source.DebianSource.Files = []source.File{{Name: "u-boot.tar.xz", SHA256: strings.Repeat("0", 64)}}
	os.WriteFile(filepath.Join(dir, "u-boot.tar.xz"), []byte("not the release"), 0o644)
	_, err = Fetch(context.Background(), r, Options{SourceDir: dir})
	var ce *kernel.ChecksumError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "u-boot.tar.xz") {
		t.Fatalf("err = %v, want a checksum error naming the file", err)
	}
}
