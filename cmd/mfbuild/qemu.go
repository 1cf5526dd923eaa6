package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/e2e"
)

func runQEMU(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mfbuild qemu", flag.ContinueOnError)
	var c common
	c.register(fs)
	c.registerBuiltins(fs)
	accel := fs.String("accel", "auto", "QEMU accelerator: auto (probe KVM, else TCG), kvm or tcg")
	out := fs.String("out", "", "build folder (default out/ARCH)")
	if err := parse(fs, args); err != nil {
		return err
	}
	o, err := c.options()
	if err != nil {
		return err
	}
	w, err := builder.WorkerStep(ctx, o, *out, os.Stdout)
	if err != nil {
		return err
	}
	res, err := e2e.Smoke(ctx, c.arch, w, *accel, o.Log)
	if err != nil {
		if res.ConsoleLog != "" {
			if b, rerr := os.ReadFile(res.ConsoleLog); rerr == nil {
				fmt.Fprintf(os.Stderr, "--- worker console ---\n%s\n---\n", b)
			}
		}
		return err
	}
	fmt.Printf("smoke: cascading_sha256 digest %s (correct)\n", res.Digest)
	fmt.Printf("accel %s; guest uptime at init %.0f ms, network %.0f ms, connected %.0f ms; exec %.1f ms\n",
		res.Accel, res.Boot.InitMS, res.Boot.NetworkMS, res.Boot.ConnectedMS, res.ExecMS)
	fmt.Printf("power-on to result %.0f ms; VM exited %.0f ms after power-on\n", res.WallMS, res.ExitedMS)
	return nil
}
