package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"

	"github.com/microfaas/microfaas/orchestrator/deploy"
	"github.com/microfaas/microfaas/orchestrator/httpguard"
)

func runDeploy(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch deploy", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: mforch deploy NAME IMAGE | --delete NAME | --list  [--addr URL] [--auth DIR]")
		fs.PrintDefaults()
	}
	addr := fs.String("addr", "http://127.0.0.1:8080", "a running mforch's HTTP API (mforch serve --http)")
	authDir := fs.String("auth", "", "mforch serve's credentials folder (default: the one mforch serve uses by default);\n"+
		"credentials in --addr (http://admin:PASSWORD@host:port) win")
	del := fs.String("delete", "", "remove the deployment NAME (its bundles are collected)")
	list := fs.Bool("list", false, "list the deployments")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	api, err := httpguard.NewEndpoint(*addr, *authDir)
	if err != nil {
		return err
	}
	c := deploy.Client{API: api, HTTP: http.DefaultClient}
	switch {
	case *list && *del == "" && len(pos) == 0:
		recs, err := c.List(ctx)
		if err != nil {
			return err
		}
		deploy.WriteRecords(os.Stdout, recs)
		return nil
	case *del != "" && !*list && len(pos) == 0:
		if err := c.Delete(ctx, *del); err != nil {
			return err
		}
		fmt.Printf("removed %s\n", *del)
		return nil
	case !*list && *del == "" && len(pos) == 2:
		rec, err := c.Deploy(ctx, pos[0], pos[1])
		if err != nil {
			return err
		}
		writeDeployed(os.Stdout, rec)
		return nil
	}
	fs.Usage()
	return errors.New("mforch deploy: give NAME and IMAGE, or --delete NAME, or --list")
}

// writeDeployed prints a deployment with its full digests, per
// architecture.
func writeDeployed(w io.Writer, rec deploy.Record) {
	kind := "stdin/stdout function"
	if rec.Watchdog {
		kind = "OpenFaaS watchdog: called over HTTP"
	}
	fmt.Fprintf(w, "deployed %s: %s (%s)\n", rec.Name, rec.Image, kind)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ARCH\tPLATFORM\tIMAGE DIGEST\tBUNDLE\tBYTES")
	for _, a := range []string{"x86", "arm"} {
		if x, ok := rec.Archs[a]; ok {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", a, x.Platform, x.ImageDigest, x.Bundle.Digest, x.Bundle.Size)
		}
	}
	tw.Flush()
}

// parseInterspersed parses flags that come before, between or after the
// positional arguments (the flag package stops at the first of those).
// Every turn takes one argument, so it ends.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
