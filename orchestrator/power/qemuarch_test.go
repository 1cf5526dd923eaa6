package power

import (
	"context"
	"errors"
	"testing"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/target"
)

// A worker whose architecture has no QEMU controller is refused by name,
// not booted with another architecture's kernel.
func TestQEMUByArchMissingArch(t *testing.T) {
	m := QEMUByArch{}
	w := cluster.Worker{ID: "arm0", Kind: cluster.KindVM, VM: cluster.VMConfig{Arch: target.ARMv7.Name}}
	if err := m.PowerOn(context.Background(), w); !errors.Is(err, ErrNoArch) {
		t.Fatal("powered on without an ARM controller")
	}
	if err := m.PowerOff(context.Background(), w); !errors.Is(err, ErrNoArch) {
		t.Fatal("powered off without an ARM controller")
	}
}
