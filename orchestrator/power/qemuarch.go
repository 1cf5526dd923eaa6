package power

import (
	"context"
	"errors"
	"fmt"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/target"
)

// ErrNoArch means a VM worker's vm.arch has no QEMU controller (no kernel
// was given for that architecture).
var ErrNoArch = errors.New("no QEMU worker image for this architecture")

// QEMUByArch is the controller of a cluster whose VM workers are of several
// architectures: each worker goes to the QEMU controller of its vm.arch.
type QEMUByArch map[*target.Target]*QEMU

func (m QEMUByArch) of(w cluster.Worker) (*QEMU, error) {
	t := w.VM.Target()
	q, ok := m[t]
	if !ok {
		return nil, fmt.Errorf("worker %s (vm.arch %s): %w: give mforch the %s worker kernel", w.ID, t, ErrNoArch, t)
	}
	return q, nil
}

// PowerOn starts the worker on the QEMU of its architecture.
func (m QEMUByArch) PowerOn(ctx context.Context, w cluster.Worker) error {
	q, err := m.of(w)
	if err != nil {
		return err
	}
	return q.PowerOn(ctx, w)
}

// PowerOnBundle starts the worker on the QEMU of its architecture, with b
// in its boot (QEMU.PowerOnBundle).
func (m QEMUByArch) PowerOnBundle(ctx context.Context, w cluster.Worker, b BootBundle) error {
	q, err := m.of(w)
	if err != nil {
		return err
	}
	return q.PowerOnBundle(ctx, w, b)
}

// PowerOff stops the worker.
func (m QEMUByArch) PowerOff(ctx context.Context, w cluster.Worker) error {
	q, err := m.of(w)
	if err != nil {
		return err
	}
	return q.PowerOff(ctx, w)
}

// OnExit registers fn with every controller.
func (m QEMUByArch) OnExit(fn func(string, error)) {
	for _, q := range m {
		q.OnExit(fn)
	}
}

// Close kills every worker.
func (m QEMUByArch) Close() {
	for _, q := range m {
		q.Close()
	}
}

// Both QEMU controllers take bundles at power-on.
var (
	_ BundleLoader = (*QEMU)(nil)
	_ BundleLoader = QEMUByArch(nil)
)
