package runtime

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unsafe"

	"github.com/microfaas/microfaas/runtime/shiplog"
	"golang.org/x/sys/unix"
)

// Uptime returns the kernel's CLOCK_BOOTTIME in milliseconds: time since the
// kernel started, which is what boot timings are measured in.
func Uptime() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return float64(ts.Sec)*1e3 + float64(ts.Nsec)/1e6
}

// MountAll mounts what a worker needs: proc, sys, devtmpfs, tmpfs on /tmp
// and /run. A target that is already mounted is left as is.
func MountAll() error {
	mounts := []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
		{"tmpfs", "/run", "tmpfs"},
		{"configfs", "/sys/kernel/config", "configfs"},
	}
	var errs []error
	for _, m := range mounts {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("mkdir %s: %w", m.dst, err))
			continue
		}
		err := unix.Mount(m.src, m.dst, m.typ, unix.MS_NOSUID|unix.MS_NODEV*boolToUintptr(m.typ != "devtmpfs"), "")
		if err != nil && !errors.Is(err, unix.EBUSY) {
			// configfs is optional: a kernel without it still runs functions.
			if m.typ == "configfs" && errors.Is(err, unix.ENODEV) {
				continue
			}
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.typ, m.dst, err))
		}
	}
	return errors.Join(errs...)
}

func boolToUintptr(b bool) uintptr {
	if b {
		return 1
	}
	return 0
}

// WaitLink waits until iface reports carrier, up to timeout. The kernel's ip=
// has normally done this before PID 1 starts, so it returns at once.
func WaitLink(iface string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	path := "/sys/class/net/" + iface + "/carrier"
	for {
		b, err := os.ReadFile(path)
		if err == nil && strings.TrimSpace(string(b)) == "1" {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("network interface %s: %w", iface, err)
			}
			return fmt.Errorf("network interface %s: no carrier after %s", iface, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// PowerOff ends the worker. mode "reboot" asks for a reset, which ends QEMU
// started with -no-reboot (the microvm has no ACPI power-off device);
// "poweroff" powers the board off. Never returns when it works.
func PowerOff(mode string) error {
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if mode == "reboot" {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	if err := unix.Reboot(cmd); err != nil {
		return fmt.Errorf("reboot(2): %w", err)
	}
	select {} // the kernel is going down
}

// SetWallClock sets CLOCK_REALTIME (PID 1 is root; functions never are).
func SetWallClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}

// The random driver's ioctls (linux/random.h).
const (
	rndAddEntropy  = unix.RNDADDENTROPY
	rndReseedCRNG  = unix.RNDRESEEDCRNG
	rndDevice      = "/dev/urandom"
	bitsPerByte    = 8
	rndHeaderBytes = 8 // struct rand_pool_info: entropy_count, buf_size
)

// Reseed mixes seed into the kernel's RNG, credited as entropy, and makes
// the kernel reseed its CRNG from it now (RNDRESEEDCRNG), rather than at
// its next scheduled reseed. Every restore of a snapshot starts from the
// same RNG state: without this, two restored workers would draw the same
// "random" numbers (nonces, the sandbox's, the functions'). Needs root.
func Reseed(seed []byte) error {
	f, err := os.OpenFile(rndDevice, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("reseed: %w", err)
	}
	defer f.Close()
	buf := make([]byte, rndHeaderBytes+len(seed))
	binary.NativeEndian.PutUint32(buf[0:], uint32(len(seed)*bitsPerByte))
	binary.NativeEndian.PutUint32(buf[4:], uint32(len(seed)))
	copy(buf[rndHeaderBytes:], seed)
	if err := ioctlPtr(f.Fd(), rndAddEntropy, unsafe.Pointer(&buf[0])); err != nil {
		return fmt.Errorf("reseed: RNDADDENTROPY: %w", err)
	}
	if err := ioctlPtr(f.Fd(), rndReseedCRNG, nil); err != nil {
		return fmt.Errorf("reseed: RNDRESEEDCRNG: %w", err)
	}
	return nil
}

func ioctlPtr(fd uintptr, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

// ConsoleNoEcho turns the echo of the terminal on fd off, so a line the
// host types (the identity, with the key) is not printed back into the
// console log. Lines are still read whole (canonical mode).
func ConsoleNoEcho(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	t.Lflag &^= unix.ECHO | unix.ECHOE | unix.ECHOK | unix.ECHONL
	t.Lflag |= unix.ICANON
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}

// readKernelLog copies the kernel's log into ring for the orchestrator,
// from the first record the kernel still holds, until /dev/kmsg fails.
func readKernelLog(ring *shiplog.Ring) error {
	f, err := os.Open(shiplog.KmsgPath)
	if err != nil {
		return err
	}
	defer f.Close()
	return shiplog.ReadKmsg(f, ring)
}
