// Package cli runs a program made of subcommands (mfbuild, mforch): usage,
// dispatch, signal handling and exit codes, shared so the mains stay thin.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Command is one subcommand.
type Command struct {
	Name, Summary string
	Run           func(ctx context.Context, args []string) error
}

// Main dispatches os.Args to the named command and exits: 0 on success, 1
// on failure (the error printed as "prog cmd: error"), 2 on bad usage.
// SIGINT and SIGTERM cancel the command's context.
func Main(prog string, commands []Command) {
	usage := func() {
		fmt.Fprintf(os.Stderr, "usage: %s COMMAND [flags]\n\ncommands:\n", prog)
		for _, c := range commands {
			fmt.Fprintf(os.Stderr, "  %-10s %s\n", c.Name, c.Summary)
		}
		fmt.Fprintf(os.Stderr, "\nrun %s COMMAND -h for its flags\n", prog)
	}
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
		if c.Name != os.Args[1] {
			continue
		}
		err := c.Run(ctx, os.Args[2:])
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s %s: %v\n", prog, c.Name, err)
			stop()
			os.Exit(1)
		}
		return
	}
	fmt.Fprintf(os.Stderr, "%s: unknown command %q\n", prog, os.Args[1])
	usage()
	os.Exit(2)
}
