package power

import (
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/target"
)

// The GPIO test boots a QEMU guest from the external test package; it uses
// the QEMU controller's own command line so there is still one way to boot
// the worker kernel (its network without forwards: it dials nothing).
func QEMUArgs(t *target.Target, accel, kernel, initrd string, w cluster.Worker, cmdline string) []string {
	return qemuArgs(t, accel, kernel, initrd, w, cmdline, "", "")
}

// PlainNet gives q's workers the unrestricted user networking of before
// issue 18 (benchmarks compare what the restriction costs).
func PlainNet(q *QEMU) { q.plainNet = true }

// RelayPort keeps q's workers on the worker port through the relay instead
// of their session port (benchmarks compare the two).
func RelayPort(q *QEMU) { q.relayPort = true }
