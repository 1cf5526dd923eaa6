package rig

import (
	"slices"
	"testing"

	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/runtime/functions"
)

// TestDemoFile: the demo's experiment file parses, and runs the compute
// functions on a bare machine unless asked for the whole suite.
func TestDemoFile(t *testing.T) {
	for _, tc := range []struct {
		name         string
		all          bool
		wantFns      []string
		wantServices string
	}{
		{"compute", false, functions.CatalogueNames(functions.KindCompute), "none"},
		{"all functions", true, functions.CatalogueNames(), "auto"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Demo{Workers: 2, Invocations: 7, Kernel: "k", Initrd: "i", Accel: "tcg", Boot: "full", Seed: 5, AllFunctions: tc.all}
			spec, err := experiment.Parse(d.File())
			if err != nil {
				t.Fatalf("%v\n%s", err, d.File())
			}
			if !slices.Equal(spec.Functions, tc.wantFns) || spec.Services != tc.wantServices ||
				spec.Workers.QEMU != 2 || spec.Invocations != 7 || spec.Seed != 5 || spec.Workers.Kernel != "k" {
				t.Errorf("spec %+v from:\n%s", spec, d.File())
			}
		})
	}
}
