package power

import (
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/target"
)

// The GPIO test boots a QEMU guest from the external test package; it uses
// the QEMU controller's own command line so there is still one way to boot
// the worker kernel (its network without forwards: it dials nothing).
func QEMUArgs(t *target.Target, accel, kernel, initrd string, w cluster.Worker, cmdline string) []string {
	return qemuArgs(t, accel, kernel, initrd, w, cmdline, "")
}
