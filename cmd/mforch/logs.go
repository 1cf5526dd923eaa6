package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/httpguard"
	"github.com/microfaas/microfaas/orchestrator/workerlog"
)

const logsUsage = `usage: mforch logs WORKER [--boot N] [--follow] [flags]
       mforch logs [WORKER] --invocation ID [--follow] [flags]

Shows a worker boot's own log as a running mforch keeps it: the kernel's and
mfinit's lines the worker shipped after connecting, and its console where
mforch has one (QEMU workers), so a boot that never connected still shows
why. Each line starts with its source: kernel, mfinit, console or mforch
(mforch's notes: lines the worker dropped, the size cap). A function's own
output is not here: it comes back with its result (the invocation's "log").

flags:
`

// logFetch fetches one chunk (orchestrator.FetchLogs against a running mforch).
type logFetch func(ctx context.Context, q orchestrator.LogQuery) (workerlog.Chunk, error)

func runLogs(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch logs", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), logsUsage)
		fs.PrintDefaults()
	}
	addr := fs.String("addr", "http://127.0.0.1:8080", "a running mforch's HTTP API")
	authDir := fs.String("auth", "", "mforch serve's credentials folder (default: the one mforch serve uses by default);\n"+
		"credentials in --addr (http://admin:PASSWORD@host:port) win")
	boot := fs.Int("boot", 0, "the worker's boot N (default: its latest; mforch keeps the last 20)")
	inv := fs.String("invocation", "", "the boot that ran invocation ID (its worker_log in GET /invocations/ID)")
	follow := fs.Bool("follow", false, "keep printing lines as they arrive; without --boot or --invocation, go on to the worker's next boots")
	every := fs.Duration("every", time.Second, "with --follow: how often to ask")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var worker string
	if fs.NArg() > 0 { // flags may follow the worker
		worker = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("one worker at a time (got %q too)", fs.Args())
		}
	}
	switch {
	case worker == "" && *inv == "":
		fs.Usage()
		return errors.New("name a worker (mforch status lists them), or an invocation with --invocation ID")
	case *boot > 0 && *inv != "":
		return errors.New("--boot or --invocation, not both")
	}
	api, err := httpguard.NewEndpoint(*addr, *authDir)
	if err != nil {
		return err
	}
	fetch := func(ctx context.Context, q orchestrator.LogQuery) (workerlog.Chunk, error) {
		return orchestrator.FetchLogs(ctx, http.DefaultClient, api, q)
	}
	q := orchestrator.LogQuery{Worker: worker, Boot: *boot, Invocation: *inv}
	return showLogs(ctx, fetch, q, *follow, *every, os.Stdout, os.Stderr)
}

// showLogs prints the boot q names, then with follow keeps asking every
// interval for more; following a worker's latest boot (no boot or
// invocation named) it moves on to each newer boot. It ends when ctx does
// (nil), or, without follow, once the boot is printed.
func showLogs(ctx context.Context, fetch logFetch, q orchestrator.LogQuery, follow bool, every time.Duration, out, errOut io.Writer) error {
	pinned := q.Boot > 0 || q.Invocation != ""
	header := true
	for {
		c, err := fetch(ctx, q)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if header {
			fmt.Fprintf(errOut, "== worker %s, boot %d (kept: %v) ==\n", c.Worker, c.Boot, c.Boots)
			header = false
		}
		io.WriteString(out, c.Text)
		// From here on, this boot by number: a newer one must not slip in.
		q.Worker, q.Boot, q.Invocation, q.Offset = c.Worker, c.Boot, "", c.Next
		if len(c.Text) > 0 && c.Next-c.Offset >= workerlog.MaxRead/2 {
			continue // more is waiting
		}
		if !c.Latest && !pinned && len(c.Text) == 0 {
			// A newer boot began: on to the next one kept.
			for _, b := range c.Boots {
				if b > c.Boot {
					q.Boot, q.Offset, header = b, 0, true
					break
				}
			}
			continue
		}
		if !follow || (pinned && !c.Latest && len(c.Text) == 0) {
			return nil // printed; or a past boot, complete
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}
