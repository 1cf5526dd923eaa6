package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/httpguard"
)

func runStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch status", flag.ContinueOnError)
	addr := fs.String("addr", "http://127.0.0.1:8080", "a running mforch's HTTP API")
	authDir := fs.String("auth", "", "mforch serve's credentials folder (default: the one mforch serve uses by default);\n"+
		"credentials in --addr (http://admin:PASSWORD@host:port) win")
	asJSON := fs.Bool("json", false, "print the raw JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	api, err := httpguard.NewEndpoint(*addr, *authDir)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api.String()+"/status", nil)
	if err != nil {
		return err
	}
	api.Authorize(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("is mforch serve running at %s? %w", api, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		return api.Unauthorized()
	}
	if resp.StatusCode == http.StatusNotFound {
		// An OpenFaaS gateway on the same host holds :8080, status's default.
		return fmt.Errorf("%s/status: 404 Not Found: that is not mforch's API (an OpenFaaS gateway listens on :8080); pass --addr with mforch serve's --http address", api)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/status: %s", api, resp.Status)
	}
	var s orchestrator.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return fmt.Errorf("%s/status: %w", api, err)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tKIND\tSTATE\tFOR")
	for _, w := range s.Workers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", w.ID, w.Kind, w.State, w.For.Round(time.Second))
	}
	tw.Flush()
	fmt.Printf("\nqueue depth %d, running %d\n", s.QueueDepth, s.Running)
	if len(s.RecentFailures) > 0 {
		fmt.Println("\nrecent failures:")
		for _, f := range s.RecentFailures {
			fmt.Printf("  %s %s %s on %s (attempts %d): %s\n", f.At.Format(time.RFC3339), f.ID, f.Function, f.Worker, f.Attempts, firstLine(f.Error))
		}
	}
	return nil
}
