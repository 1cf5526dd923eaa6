// Package runtime is the MicroFaaS worker: PID 1 of every worker. It mounts
// the pseudo filesystems, reads who it is from the kernel command line,
// connects to the orchestrator, runs jobs and powers off as told.
package runtime

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/microfaas/microfaas/protocol"
)

// The kernel command-line parameters, re-exported from protocol for the
// worker's own use.
const (
	ParamID       = protocol.ParamID
	ParamOrch     = protocol.ParamOrch
	ParamOff      = protocol.ParamOff
	ParamFailsafe = protocol.ParamFailsafe
	ParamIface    = protocol.ParamIface
	ParamProbe    = protocol.ParamProbe
	ProbeMarker   = protocol.ProbeMarker
)

// Config is the worker's identity and behaviour, from the command line.
type Config struct {
	ID       string
	Orch     string
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
	return c, nil
}
