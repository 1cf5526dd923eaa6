package image

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/microfaas/microfaas/orchestrator/inventory"
	"github.com/microfaas/microfaas/protocol"
)

// BBBConsole is the BeagleBone Black's serial console: UART0 on the J1
// header, driven by 8250-omap (ttyS0), at the ROM's and U-Boot's speed.
const BBBConsole = "ttyS0,115200n8"

// WorkerError names the worker and field a problem is about.
type WorkerError struct {
	Worker, Field, Msg string
}

func (e *WorkerError) Error() string {
	return fmt.Sprintf("worker %s: %s: %s", e.Worker, e.Field, e.Msg)
}

// LookupBBB returns the BeagleBone worker id of the cluster, or an error
// naming it when it is unknown or not a BeagleBone.
func LookupBBB(c *inventory.Cluster, id string) (inventory.Worker, error) {
	w, ok := c.Worker(id)
	if !ok {
		var ids []string
		for _, w := range c.Workers {
			if w.Kind == inventory.KindBBB {
				ids = append(ids, w.ID)
			}
		}
		return w, &WorkerError{id, "id", fmt.Sprintf("no such worker in the cluster file (BeagleBone workers: %s)", strings.Join(ids, ", "))}
	}
	if w.Kind != inventory.KindBBB {
		return w, &WorkerError{id, "kind", fmt.Sprintf("is %q: SD/eMMC images are for kind %q workers", w.Kind, inventory.KindBBB)}
	}
	return w, nil
}

// Bootargs is a BeagleBone worker's kernel command line: the console, the
// kernel's own static IP configuration (no DHCP, up before PID 1), and the
// worker's identity and orchestrator (see docs/protocol.md; its key is on
// the card, not here). The cluster must have a secret to derive it. extra
// is appended (the flasher's parameters, --debug's changes).
func Bootargs(c *inventory.Cluster, w inventory.Worker, quiet bool, extra ...string) (string, error) {
	p, err := netip.ParsePrefix(c.Network.Subnet)
	if err != nil {
		return "", &WorkerError{w.ID, "network.subnet", err.Error()}
	}
	ip, err := netip.ParseAddr(w.IP)
	if err != nil || !ip.Is4() {
		return "", &WorkerError{w.ID, "ip", fmt.Sprintf("want an IPv4 address, got %q", w.IP)}
	}
	if !p.Masked().Contains(ip) {
		return "", &WorkerError{w.ID, "ip", fmt.Sprintf("%s is outside the subnet %s", ip, p.Masked())}
	}
	if len(c.SecretBytes()) == 0 {
		return "", &WorkerError{w.ID, "secret", "the cluster has no secret"}
	}
	parts := []string{"console=" + BBBConsole}
	if quiet {
		// The serial console runs at 115200 baud: printing the boot log
		// would cost about a second of every boot.
		parts = append(parts, "quiet")
	}
	parts = append(parts,
		fmt.Sprintf("ip=%s::%s:%s:%s:eth0:off", ip, c.Network.Gateway, mask(p.Bits()), w.ID),
		protocol.ParamID+"="+w.ID,
		protocol.ParamOrch+"="+c.Addr(),
		// The TPS65217 PMIC really powers the board off (via the RTC's PMIC_POWER_EN).
		protocol.ParamOff+"=poweroff",
	)
	parts = append(parts, extra...)
	s := strings.Join(parts, " ")
	if len(s)+1 > MaxBootargs {
		return "", &WorkerError{w.ID, "bootargs", fmt.Sprintf("%d bytes exceed the kernel's %d-byte command line", len(s), MaxBootargs-1)}
	}
	return s, nil
}

func mask(bits int) string {
	m := uint32(0xffffffff) << (32 - bits)
	return fmt.Sprintf("%d.%d.%d.%d", m>>24, m>>16&0xff, m>>8&0xff, m&0xff)
}

// FlasherBootargs is the kernel command line of a flasher card: the console
// (not quiet: its progress is the report) and the flasher's parameters. No
// ip=: the kernel would wait up to two minutes for a carrier on a board with
// no cable, and the flasher needs no network.
func FlasherBootargs(w inventory.Worker, flash ...string) (string, error) {
	parts := append([]string{"console=" + BBBConsole, protocol.ParamID + "=" + w.ID, protocol.ParamOff + "=poweroff"}, flash...)
	s := strings.Join(parts, " ")
	if len(s)+1 > MaxBootargs {
		return "", &WorkerError{w.ID, "bootargs", fmt.Sprintf("%d bytes exceed the kernel's %d-byte command line", len(s), MaxBootargs-1)}
	}
	return s, nil
}
