package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/lab/experiment"
	"github.com/microfaas/microfaas/runtime/functions"

	"github.com/microfaas/microfaas/lab/rig"
)

// runDemo is a small experiment on local QEMU workers: the same run folder
// and report as mforch experiment, from flags instead of a file.
func runDemo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch demo", flag.ContinueOnError)
	workers := fs.Int("workers", 3, "local QEMU workers")
	kernel := fs.String("kernel", "out/x86/bzImage", "worker kernel (mfbuild worker)")
	initrd := fs.String("initrd", "out/x86/initramfs.cpio", "worker initramfs")
	accel := fs.String("accel", "auto", "QEMU accelerator: auto (probe KVM, else TCG), kvm or tcg")
	boot := fs.String("boot", "full", "how workers start: full (kernel and initramfs) or snapshot (restore a saved VM)")
	n := fs.Int("invocations", 36, "how many invocations to run")
	seed := fs.Int64("seed", functions.DefaultInputSeed, "seed of the input generator")
	compute := functions.CatalogueNames(functions.KindCompute)
	all := fs.Bool("all-functions", false, fmt.Sprintf("run the whole suite (%d functions), starting the services it needs (%s) on loopback (scripts/services/install.sh installs them); default: the %d compute functions",
		len(functions.Catalogue), strings.Join(functions.ServicesFor(functions.CatalogueNames()), ", "), len(compute)))
	out := fs.String("out", "out/demo", "folder for the run folder (run/) and report.html")
	verbose := fs.Bool("v", false, "verbose orchestrator logs")
	var policy cluster.Policy
	policyFlag(fs, &policy)
	if err := fs.Parse(args); err != nil {
		return err
	}
	raw := rig.Demo{Workers: *workers, Invocations: *n, Kernel: *kernel, Initrd: *initrd, Accel: *accel,
		Boot: *boot, Seed: *seed, AllFunctions: *all}.File()
	spec, err := experiment.Parse(raw)
	if err != nil {
		return err
	}
	dir := filepath.Join(*out, "run")
	if err := os.RemoveAll(dir); err != nil { // each demo records a fresh run
		return err
	}
	e := rig.TerminalExperiment(spec, raw, dir, *verbose)
	e.Policy = policy
	sum, err := rig.RunExperiment(ctx, e)
	if err != nil {
		return err
	}
	page := filepath.Join(*out, "report.html")
	fmt.Println()
	if err := rig.WriteReport([]string{dir}, page, os.Stdout); err != nil {
		return err
	}
	fmt.Printf("\nrun folder: %s\nreport:     %s\nconsoles:   %s\n", dir, page, filepath.Join(dir, "consoles"))
	if sum.Failed > 0 {
		return fmt.Errorf("%d of %d invocations failed (%s has their errors)", sum.Failed, sum.Done, filepath.Join(dir, "results.csv"))
	}
	return nil
}
