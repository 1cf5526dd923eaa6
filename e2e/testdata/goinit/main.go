// Command goinit is the cold-start benchmark's second baseline: the least a
// Go /init can do to be a worker. It mounts /proc, prints the /init marker,
// connects to mf.orch from the kernel command line and says
// "hello UPTIME_SECONDS", as the busybox baseline's shell does, then resets.
// Against it, what the Go runtime itself costs a boot is measured apart
// from what the worker (mfinit) adds. Standard library only, on purpose.
package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
)

// uptime is /proc/uptime's first field, in seconds.
func uptime() string {
	b, _ := os.ReadFile("/proc/uptime")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "0"
	}
	return f[0]
}

func main() {
	syscall.Mount("proc", "/proc", "proc", 0, "")
	up := strings.ReplaceAll(uptime(), ".", "") + "0" // centiseconds to ms, as the shell baseline does
	fmt.Printf("MFINIT-START uptime_ms=%s\n", strings.TrimLeft(up, "0"))
	b, _ := os.ReadFile("/proc/cmdline")
	orch := ""
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, "mf.orch="); ok {
			orch = v
		}
	}
	if c, err := net.Dial("tcp", orch); err == nil {
		fmt.Fprintf(c, "hello %s\n", uptime())
		c.Read(make([]byte, 16))
		c.Close()
	}
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART)
}
