package runtime

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

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
