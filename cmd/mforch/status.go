package main

import (
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"os"

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
	s, err := orchestrator.FetchStatus(ctx, http.DefaultClient, api)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	s.WriteText(os.Stdout)
	return nil
}
