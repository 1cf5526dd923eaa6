package flash

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/bootparams"
)

// TestConfigFrom reads the flasher's parameters as the boot does: the
// command line parsed once, then ConfigFrom.
func TestConfigFrom(t *testing.T) {
	h := sha256.Sum256([]byte("x"))
	good, err := bootparams.Params{Kernel: []string{"console=ttyS0", "quiet"},
		Flash: &bootparams.Flash{Src: "/dev/mmcblk0p2", Dst: "/dev/mmcblk1", Size: 42, SHA256: h[:]}}.Render()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, cmdline string
		err           error
	}{
		{"good", good, nil},
		{"no dst", strings.Replace(good, bootparams.FlashDst+"=/dev/mmcblk1", "", 1), bootparams.ErrMissing},
		{"bad size", strings.Replace(good, bootparams.FlashSize+"=42", bootparams.FlashSize+"=-1", 1), bootparams.ErrInvalid},
		{"short hash", good[:len(good)-10], bootparams.ErrInvalid},
		{"same device", strings.Replace(good, "/dev/mmcblk0p2", "/dev/mmcblk1", 1), bootparams.ErrInvalid},
		{"not a flasher", "console=ttyS0", bootparams.ErrMissing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := bootparams.Parse(tc.cmdline)
			var c Config
			if err == nil {
				c, err = ConfigFrom(p)
			}
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err == nil && (c.Src != "/dev/mmcblk0p2" || c.Dst != "/dev/mmcblk1" || c.Size != 42 || !bytes.Equal(c.SHA256, h[:])) {
				t.Fatalf("%+v", c)
			}
		})
	}
	// Parameters built by hand are checked too.
	bad := bootparams.Params{Flash: &bootparams.Flash{Src: "/dev/mmcblk1", Dst: "/dev/mmcblk1", Size: 42, SHA256: h[:]}}
	if _, err := ConfigFrom(bad); !errors.Is(err, bootparams.ErrInvalid) {
		t.Fatalf("same device by hand: err = %v, want %v", err, bootparams.ErrInvalid)
	}
}

// TestRun copies between files as it would between block devices, and
// refuses a source whose hash is wrong without touching the destination.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	img := bytes.Repeat([]byte("microfaas"), 100000)
	src := filepath.Join(dir, "sd")
	os.WriteFile(src, append(bytes.Clone(img), []byte("trailing data not part of the image")...), 0o644)
	dst := filepath.Join(dir, "emmc")
	os.WriteFile(dst, bytes.Repeat([]byte{0xee}, len(img)+4096), 0o644)
	h := sha256.Sum256(img)
	cfg := Config{Src: src, Dst: dst, Size: int64(len(img)), SHA256: h[:], DeviceWait: time.Second}

	bad := cfg
	bad.SHA256 = make([]byte, 32)
	if _, err := Run(bad); err == nil || !strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("wrong source hash: err = %v", err)
	}
	if b, _ := os.ReadFile(dst); b[0] != 0xee {
		t.Fatal("the destination was written although the source hash was wrong")
	}
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(b[:len(img)], img) || b[len(img)] != 0xee || res.Bytes != int64(len(img)) {
		t.Fatal("destination does not hold exactly the image followed by its old bytes")
	}
	missing := cfg
	missing.Dst = filepath.Join(dir, "nope")
	missing.DeviceWait = 50 * time.Millisecond
	if _, err := Run(missing); err == nil || !strings.Contains(err.Error(), "did not appear") {
		t.Fatalf("missing device: err = %v", err)
	}
}
