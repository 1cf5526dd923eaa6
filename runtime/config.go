// Package runtime is the MicroFaaS worker: PID 1 of every worker. Boot is
// its boot sequence, step by step: it takes its key, mounts the pseudo
// filesystems, reads who it is from the kernel command line (once, into
// bootparams.Params), connects to the orchestrator, runs jobs and powers off
// as told.
package runtime

import (
	"fmt"
	"time"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/protocol"
)

// ProbeMarker is printed on the console by a worker booted with mf.probe=1.
const ProbeMarker = protocol.ProbeMarker

// Config is the worker's identity and behaviour, from the command line.
type Config struct {
	ID       string
	Orch     string
	OffMode  string // "poweroff" or "reboot"
	Failsafe time.Duration
	Iface    string
	Probe    bool
	// Snapshot: wait for the identity on the console (mf.snapshot=1); ID
	// and Orch are empty until then.
	Snapshot bool
}

// ConfigFrom is the worker's Config from its boot parameters (parsed once,
// by Boot), with the worker's defaults. The Config is filled as far as p
// allows even when an error is returned (the power-off mode is needed to
// stop).
func ConfigFrom(p bootparams.Params) (Config, error) {
	c := Config{OffMode: bootparams.PowerOff, Failsafe: 120 * time.Second, Iface: "eth0"}
	c.ID, c.Orch, c.Probe, c.Snapshot = p.ID, p.Orch, p.Probe, p.Snapshot
	if p.Off != "" {
		c.OffMode = p.Off
	}
	if p.Failsafe > 0 {
		c.Failsafe = p.Failsafe
	}
	if p.Iface != "" {
		c.Iface = p.Iface
	}
	if err := p.Validate(); err != nil || c.Probe {
		return c, err
	}
	for _, m := range []struct{ name, v string }{{bootparams.ID, c.ID}, {bootparams.Orch, c.Orch}} {
		if m.v == "" && !c.Snapshot {
			return c, fmt.Errorf("%w: %s= on the kernel command line", bootparams.ErrMissing, m.name)
		}
	}
	return c, nil
}
