package builder

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/builder/image"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/testfn"
	"github.com/microfaas/microfaas/target"
)

// needARM skips (or, in CI, fails) when the ARM build's inputs are missing.
func needARM(t *testing.T) { t.Helper(); testfn.NeedARM(t) }

func armOptions(t *testing.T) Options {
	return Options{RepoDir: repo(t), Arch: target.ARMv7, Cache: cache.Cache{Dir: cache.DefaultDir()}}
}

// buildBBB builds (or takes from the cache) the ARM worker and U-Boot.
func buildBBB(t *testing.T) BBB {
	t.Helper()
	needARM(t)
	b, err := BuildBBB(context.Background(), armOptions(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBBBImages writes the ten SD-card images of the example cluster from the
// real kernel and U-Boot builds and checks each with the real tools, plus an
// eMMC and a flasher image.
func TestBBBImages(t *testing.T) {
	b := buildBBB(t)
	c, err := cluster.Load(filepath.Join(repo(t), "configs", "cluster.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var reqs []ImageRequest
	for _, w := range c.Workers {
		if w.Kind == cluster.KindBBB {
			reqs = append(reqs, ImageRequest{Medium: MediumSD, Worker: w.ID, Out: filepath.Join(dir, w.ID+"-sdcard.img")})
		}
	}
	reqs = append(reqs,
		ImageRequest{Medium: MediumEMMC, Worker: "bbb3", Out: filepath.Join(dir, "bbb3-emmc.img")},
		ImageRequest{Medium: MediumFlasher, Worker: "bbb3", Out: filepath.Join(dir, "bbb3-flasher.img")})
	infos, err := WriteImages(c, b.Boot, reqs)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 12 {
		t.Fatalf("%d images, want 12", len(infos))
	}
	t.Logf("image: %d bytes; uImage %d bytes; DTB %d bytes (args area %d); u-boot.img at sector %#x, args %#x, kernel %#x",
		infos[0].Size, fileSize(t, b.Boot.UImage), len(infos[0].DTB), infos[0].Layout.Args.Size,
		b.Boot.Raw.UBootSector, b.Boot.Raw.ArgsSector, b.Boot.Raw.KernelSector)
	for i, info := range infos {
		r := reqs[i]
		w, _ := c.Worker(r.Worker)
		want, err := image.Bootargs(c, w, false)
		if err != nil {
			t.Fatal(err)
		}
		if r.Medium == MediumFlasher {
			emmc, _ := os.ReadFile(infos[i-1].Path)
			want, _ = image.FlasherBootargs(w, FlasherParams(emmc))
			img, _ := os.ReadFile(info.Path)
			if !bytes.Equal(img[info.Payload.Offset:info.Payload.Offset+int64(len(emmc))], emmc) {
				t.Errorf("the flasher's partition 2 does not hold bbb3's eMMC image")
			}
		}
		if err := image.Verify(info.Path, b.Boot, info, want); err != nil {
			t.Errorf("%s: %v", info.Path, err)
		}
		got, _ := image.DTBBootargs(info.DTB)
		if r.Medium == MediumFlasher {
			if strings.Contains(got, "ip=") || !strings.Contains(got, bootparams.FlashOn+"=1") {
				t.Errorf("flasher bootargs %q: want mf.flash=1 and no ip=", got)
			}
			continue
		}
		if !strings.Contains(got, "mf.id="+w.ID+" ") || !strings.Contains(got, "ip="+w.IP+"::") {
			t.Errorf("%s: bootargs %q do not name the worker", info.Path, got)
		}
	}
	// The eMMC image is the SD card's layout; only the FAT label differs.
	sd, _ := os.ReadFile(infos[3].Path)
	emmc, _ := os.ReadFile(infos[10].Path)
	diff := 0
	for i := range sd {
		if sd[i] != emmc[i] {
			diff++
		}
	}
	if len(sd) != len(emmc) || diff == 0 || diff > 32 {
		t.Errorf("bbb3's SD and eMMC images differ in %d bytes (sizes %d, %d): want only the volume label", diff, len(sd), len(emmc))
	}
	// Ten workers' images differ only where their personal data lies.
	first, _ := os.ReadFile(infos[0].Path)
	for _, info := range infos[1:10] {
		img, _ := os.ReadFile(info.Path)
		for off := range img {
			if img[off] != first[off] && !inRegions(int64(off), append(info.Personal, infos[0].Personal...)) {
				t.Fatalf("%s differs from %s at %#x, outside the personal regions", info.Path, infos[0].Path, off)
			}
		}
	}
}

func inRegions(off int64, rs []image.Region) bool {
	for _, r := range rs {
		if off >= r.Offset && off < r.End() {
			return true
		}
	}
	return false
}

func fileSize(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestImageBadInput checks the errors for bad clusters and requests: each
// names the worker and the field, and no image is written.
func TestImageBadInput(t *testing.T) {
	const base = `
network: {subnet: 192.168.1.0/24, gateway: 192.168.1.1, orchestrator: 192.168.1.2}
secret: 000102030405060708090a0b0c0d0e0f
workers:
  - {id: bbb0, kind: bbb, ip: 192.168.1.10, mac: "d0:39:72:00:00:00", power: {pin: P9_12}}
  - {id: vm0, kind: vm, ip: 192.168.1.100}
`
	tests := []struct {
		name, extra, worker string
		wantErr             []string
	}{
		{"unknown worker", "", "bbb9", []string{"worker bbb9", "id", "no such worker"}},
		{"not a BeagleBone", "", "vm0", []string{"worker vm0", "kind"}},
		{"duplicate id", "  - {id: bbb0, kind: bbb, ip: 192.168.1.11, power: {pin: P9_15}}\n", "bbb0", []string{"worker bbb0", "id: duplicate"}},
		{"duplicate IP", "  - {id: bbb1, kind: bbb, ip: 192.168.1.10, power: {pin: P9_15}}\n", "bbb1", []string{"worker bbb1", "ip", "also worker bbb0"}},
		{"duplicate MAC", "  - {id: bbb1, kind: bbb, ip: 192.168.1.11, mac: \"d0:39:72:00:00:00\", power: {pin: P9_15}}\n", "bbb1", []string{"worker bbb1", "mac"}},
		{"outside subnet", "  - {id: bbb1, kind: bbb, ip: 10.1.1.1, power: {pin: P9_15}}\n", "bbb1", []string{"worker bbb1", "ip", "outside subnet"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c, err := cluster.Parse([]byte(base+tc.extra), ".")
			if err == nil {
				_, err = WriteImages(c, image.Boot{}, []ImageRequest{{Medium: MediumSD, Worker: tc.worker, Out: filepath.Join(dir, "x.img")}})
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("left behind: %s", ents[0].Name())
			}
		})
	}
}
