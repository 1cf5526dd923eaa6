package image

import (
	"path/filepath"
	"testing"

	"github.com/microfaas/microfaas/cluster"
)

// TestClusterExample checks that the documented example is a valid cluster
// file describing the original wiring: ten BeagleBones on the original GPIO
// pins and four VMs.
func TestClusterExample(t *testing.T) {
	c, err := cluster.Load(filepath.Join("..", "..", "configs", "cluster.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pins := []string{"P9_12", "P9_15", "P9_23", "P9_25", "P9_27", "P8_8", "P8_10", "P8_11", "P8_14", "P9_26"}
	var bbb, vm int
	for _, w := range c.Workers {
		switch w.Kind {
		case cluster.KindBBB:
			if bbb < len(pins) && w.Power.Pin != pins[bbb] {
				t.Errorf("worker %s on %s, want %s (the original wiring)", w.ID, w.Power.Pin, pins[bbb])
			}
			if _, err := Bootargs(c, w, false); err != nil {
				t.Error(err)
			}
			bbb++
		case cluster.KindVM:
			vm++
		}
	}
	if bbb != 10 || vm != 4 {
		t.Fatalf("%d BeagleBones and %d VMs, want 10 and 4", bbb, vm)
	}
}
