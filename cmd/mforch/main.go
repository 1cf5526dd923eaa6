// Command mforch is the MicroFaaS orchestrator: it powers workers on and off,
// queues invocations, hands them to workers, and records the results.
//
//	mforch serve [--cluster FILE] --kernel bzImage --initrd initramfs.cpio
//	mforch demo  --kernel bzImage --initrd initramfs.cpio [--workers 3 --invocations 36]
//	mforch status [--addr http://127.0.0.1:8080]
//	mforch loadgen [--addr URL] [-n 170] [--arrival poisson --rate 2]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}

var commands = []command{
	{"serve", "run the orchestrator service for a cluster", runServe},
	{"demo", "boot a local cluster of QEMU workers, run the workload suite, print and plot the results", runDemo},
	{"status", "show a running mforch's workers, queue depth and recent failures", runStatus},
	{"loadgen", "drive a running mforch with the original experiment's seeded workload", runLoadgen},
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: mforch COMMAND [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(os.Stderr, "\nrun mforch COMMAND -h for its flags\n")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands {
		if c.name == os.Args[1] {
			err := c.run(ctx, os.Args[2:])
			if errors.Is(err, flag.ErrHelp) {
				return
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "mforch %s: %v\n", c.name, err)
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "mforch: unknown command %q\n", os.Args[1])
	usage()
	os.Exit(2)
}
