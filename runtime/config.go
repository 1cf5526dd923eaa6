// Package runtime is the MicroFaaS worker: PID 1 of every worker. It mounts
// the pseudo filesystems, reads who it is from the kernel command line,
// connects to the orchestrator, runs jobs and powers off as told.
package runtime

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Kernel command-line parameters the worker reads (docs/protocol.md lists
// them). The network itself is configured by the kernel's ip= parameter.
const (
	ParamID       = "mf.id"       // worker id, as in the cluster file
	ParamOrch     = "mf.orch"     // orchestrator host:port
	ParamSecret   = "mf.secret"   // the cluster's shared secret, hex
	ParamOff      = "mf.off"      // how to power off: "poweroff" (default) or "reboot" (QEMU -no-reboot)
	ParamFailsafe = "mf.failsafe" // seconds without a word from the orchestrator before powering off
	ParamIface    = "mf.iface"    // network interface to wait for (default eth0)
	ParamProbe    = "mf.probe"    // 1: print a boot marker and power off (accelerator probe)
)

// ProbeMarker is printed on the console when booted with mf.probe=1.
const ProbeMarker = "MFINIT-PROBE-OK"

// Config is the worker's identity and behaviour, from the command line.
type Config struct {
	ID       string
	Orch     string
	Secret   []byte
	OffMode  string // "poweroff" or "reboot"
	Failsafe time.Duration
	Iface    string
	Probe    bool
}

// ParseCmdline reads the worker's parameters from a kernel command line.
func ParseCmdline(cmdline string) (Config, error) {
	c := Config{OffMode: "poweroff", Failsafe: 120 * time.Second, Iface: "eth0"}
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case ParamID:
			c.ID = v
		case ParamOrch:
			c.Orch = v
		case ParamSecret:
			s, err := hex.DecodeString(v)
			if err != nil {
				return c, fmt.Errorf("%s: not hex: %w", ParamSecret, err)
			}
			c.Secret = s
		case ParamOff:
			if v != "poweroff" && v != "reboot" {
				return c, fmt.Errorf("%s=%q: want poweroff or reboot", ParamOff, v)
			}
			c.OffMode = v
		case ParamFailsafe:
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return c, fmt.Errorf("%s=%q: want a positive number of seconds", ParamFailsafe, v)
			}
			c.Failsafe = time.Duration(n) * time.Second
		case ParamIface:
			c.Iface = v
		case ParamProbe:
			c.Probe = v == "1"
		}
	}
	if c.Probe {
		return c, nil
	}
	if c.ID == "" {
		return c, fmt.Errorf("missing %s= on the kernel command line", ParamID)
	}
	if c.Orch == "" {
		return c, fmt.Errorf("missing %s=host:port on the kernel command line", ParamOrch)
	}
	if len(c.Secret) == 0 {
		return c, fmt.Errorf("missing %s= on the kernel command line", ParamSecret)
	}
	return c, nil
}
