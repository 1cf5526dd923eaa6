// Package flash is the worker's flasher mode (mf.flash=1 on the kernel
// command line): booted from a flasher SD card, the worker copies the eMMC
// image stored on the card to the board's eMMC, reads it back to verify its
// SHA-256, prints the result on the serial console and powers off. It
// replaces the original procedure of a base image, dd and a serial-console
// session per board.
//
// It is a separate entry from the worker proper: the worker's boot
// (runtime.Boot) calls Main instead of serving when the boot parameters
// have mf.flash=1.
package flash

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microfaas/microfaas/bootparams"
)

// The console line that reports the result starts with one of these.
const (
	OKMarker   = "MFFLASH-OK"
	FailMarker = "MFFLASH-FAILED"
)

// Config says what to copy where.
type Config struct {
	Src, Dst string
	Size     int64
	SHA256   []byte
	// DeviceWait is how long to wait for the block devices to appear (the
	// MMC controllers probe asynchronously).
	DeviceWait time.Duration
}

// ConfigFrom reads the flasher's parameters from the worker's boot
// parameters (bootparams.Flash).
func ConfigFrom(p bootparams.Params) (Config, error) {
	c := Config{DeviceWait: 60 * time.Second}
	if p.Flash == nil {
		return c, fmt.Errorf("%w: %s=1 on the kernel command line", bootparams.ErrMissing, bootparams.FlashOn)
	}
	if err := p.Validate(); err != nil {
		return c, err
	}
	c.Src, c.Dst, c.Size, c.SHA256 = p.Flash.Src, p.Flash.Dst, p.Flash.Size, p.Flash.SHA256
	return c, nil
}

// Result is what a flash did.
type Result struct {
	Bytes            int64
	SHA256           string
	ReadMS, WriteMS  float64
	VerifyMS, WaitMS float64
}

// Run copies cfg.Size bytes from Src to Dst: it first checks the source's
// hash (a damaged card must not be written to the eMMC), writes, flushes the
// device and drops its cached pages, then reads the eMMC back and checks the
// hash again.
func Run(cfg Config) (Result, error) {
	var res Result
	start := time.Now()
	for _, dev := range []string{cfg.Src, cfg.Dst} {
		if err := waitDevice(dev, cfg.DeviceWait); err != nil {
			return res, err
		}
	}
	res.WaitMS = ms(time.Since(start))
	want := hex.EncodeToString(cfg.SHA256)
	t := time.Now()
	img, err := readAll(cfg.Src, cfg.Size)
	if err != nil {
		return res, fmt.Errorf("read the image from %s: %w", cfg.Src, err)
	}
	res.ReadMS = ms(time.Since(t))
	if got := sum(img); got != want {
		return res, fmt.Errorf("the image on %s hashes to %s, want %s: the flasher card is damaged, write it again (nothing was written to %s)",
			cfg.Src, got, want, cfg.Dst)
	}
	t = time.Now()
	if err := writeDevice(cfg.Dst, img); err != nil {
		return res, fmt.Errorf("write %s: %w", cfg.Dst, err)
	}
	res.WriteMS = ms(time.Since(t))
	t = time.Now()
	back, err := readAll(cfg.Dst, cfg.Size)
	if err != nil {
		return res, fmt.Errorf("read back %s: %w", cfg.Dst, err)
	}
	res.VerifyMS = ms(time.Since(t))
	got := sum(back)
	if got != want {
		return res, fmt.Errorf("read back from %s: sha256 %s, want %s: the device did not keep what was written", cfg.Dst, got, want)
	}
	res.Bytes, res.SHA256 = cfg.Size, got
	return res, nil
}

// Main runs the flasher as PID 1 with the boot parameters p and reports on
// out. parseErr is bootparams.Parse's error for p: a command line that did
// not parse is reported, not flashed. On success Main returns (the caller
// powers off); on failure it never returns: the board stays on, printing
// the error, so a person sees it on the console and the power LED.
func Main(out io.Writer, p bootparams.Params, parseErr error) {
	cfg, err := ConfigFrom(p)
	if parseErr != nil {
		err = parseErr
	}
	if err == nil {
		fmt.Fprintf(out, "mfflash: writing %d bytes from %s to %s\n", cfg.Size, cfg.Src, cfg.Dst)
		var res Result
		res, err = Run(cfg)
		if err == nil {
			fmt.Fprintf(out, "%s bytes=%d sha256=%s wait_ms=%.0f read_ms=%.0f write_ms=%.0f verify_ms=%.0f\n",
				OKMarker, res.Bytes, res.SHA256, res.WaitMS, res.ReadMS, res.WriteMS, res.VerifyMS)
			return
		}
	}
	for {
		fmt.Fprintf(out, "%s %v\n", FailMarker, err)
		time.Sleep(10 * time.Second)
	}
}

func waitDevice(dev string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		if _, err := os.Stat(dev); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("block device %s did not appear within %s (is the card/eMMC present?): %w", dev, wait, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readAll(dev string, size int64) ([]byte, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("%w (is the device smaller than %d bytes?)", err, size)
	}
	return b, nil
}

func writeDevice(dev string, b []byte) error {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, bytes.NewReader(b)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("flush: %w", err)
	}
	// Drop the device's cached pages, so the read-back comes from the
	// device and not from memory. (A plain file, in tests, has none to drop.)
	if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeDevice != 0 {
		if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0); err != nil {
			f.Close()
			return fmt.Errorf("BLKFLSBUF: %w", err)
		}
	}
	return f.Close()
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
