package image

import (
	"fmt"
	"strings"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/cluster"
)

// BBBConsole is the BeagleBone Black's serial console: UART0 on the J1
// header, driven by 8250-omap (ttyS0), at the ROM's and U-Boot's speed.
const BBBConsole = "ttyS0,115200n8"

// WorkerError names the worker and field a problem is about.
type WorkerError struct {
	Worker, Field, Msg string
	Err                error // the cause, if any (Msg is then its text)
}

func (e *WorkerError) Error() string {
	return fmt.Sprintf("worker %s: %s: %s", e.Worker, e.Field, e.Msg)
}

func (e *WorkerError) Unwrap() error { return e.Err }

// LookupBBB returns the BeagleBone worker id of the cluster, or an error
// naming it when it is unknown or not a BeagleBone.
func LookupBBB(c *cluster.Cluster, id string) (cluster.Worker, error) {
	w, ok := c.Worker(id)
	if !ok {
		var ids []string
		for _, w := range c.Workers {
			if w.Kind == cluster.KindBBB {
				ids = append(ids, w.ID)
			}
		}
		return w, &WorkerError{Worker: id, Field: "id", Msg: fmt.Sprintf("no such worker in the cluster file (BeagleBone workers: %s)", strings.Join(ids, ", "))}
	}
	if w.Kind != cluster.KindBBB {
		return w, &WorkerError{Worker: id, Field: "kind", Msg: fmt.Sprintf("is %q: SD/eMMC images are for kind %q workers", w.Kind, cluster.KindBBB)}
	}
	return w, nil
}

// BBBLoopsPerJiffy is the BeagleBone Black's delay-loop calibration at
// 1 GHz with our kernel's HZ=100 (BogoMIPS 996.14 = lpj * HZ / 500000, as
// the board's kernel logs it when it calibrates). If the CPU runs slower
// than 1 GHz, delays only get longer than asked, never shorter.
const BBBLoopsPerJiffy = 4980736

// Bootargs is a BeagleBone worker's kernel command line: the console, the
// kernel's own static IP configuration (no DHCP, up before PID 1), and the
// worker's identity and orchestrator (see docs/protocol.md; its own key is
// on the card, not here). A debug
// image keeps the boot messages and asks for the console shell (mf.debug).
func Bootargs(c *cluster.Cluster, w cluster.Worker, debug bool) (string, error) {
	p, err := c.BootParams(w)
	if err != nil {
		return "", err
	}
	if len(c.SecretBytes()) == 0 {
		return "", &WorkerError{Worker: w.ID, Field: "secret", Msg: "the cluster has no secret"}
	}
	p.Kernel = []string{"console=" + BBBConsole,
		// No legacy BSD PTYs: nothing on a worker uses them, and creating
		// their 256 device pairs was the slowest initcall (docs/performance.md).
		"pty.legacy_count=0",
		// The AM335x has no timer the kernel can delay with, so it would
		// calibrate its delay loop at every boot (with HZ=100, about 20-40
		// jiffies: 0.2-0.4 s). BBBLoopsPerJiffy is the board's value.
		fmt.Sprintf("lpj=%d", BBBLoopsPerJiffy)}
	if !debug {
		// The serial console runs at 115200 baud: printing the boot log
		// would cost about a second of every boot.
		p.Kernel = append(p.Kernel, "quiet")
	}
	// The TPS65217 PMIC really powers the board off (via the RTC's PMIC_POWER_EN).
	p.Off = bootparams.PowerOff
	p.Debug = debug
	return render(w, p)
}

func render(w cluster.Worker, p bootparams.Params) (string, error) {
	s, err := p.Render()
	if err != nil {
		return "", &WorkerError{Worker: w.ID, Field: "bootargs", Msg: err.Error(), Err: err}
	}
	if len(s)+1 > MaxBootargs {
		return "", &WorkerError{Worker: w.ID, Field: "bootargs", Msg: fmt.Sprintf("%d bytes exceed the kernel's %d-byte command line", len(s), MaxBootargs-1)}
	}
	return s, nil
}

// FlasherBootargs is the kernel command line of a flasher card: the console
// (not quiet: its progress is the report) and the flasher's parameters. No
// ip=: the kernel would wait up to two minutes for a carrier on a board with
// no cable, and the flasher needs no network.
func FlasherBootargs(w cluster.Worker, f bootparams.Flash) (string, error) {
	return render(w, bootparams.Params{Kernel: []string{"console=" + BBBConsole}, ID: w.ID, Off: bootparams.PowerOff, Flash: &f})
}
