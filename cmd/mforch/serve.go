package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/openfaas/faas-provider/auth"

	"github.com/microfaas/microfaas/lab/rig"
	"github.com/microfaas/microfaas/orchestrator/httpguard"
	"github.com/microfaas/microfaas/orchestrator/openfaas"
)

func runServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch serve", flag.ContinueOnError)
	var c clusterFlags
	c.register(fs)
	httpAddr := fs.String("http", "127.0.0.1:8080", "HTTP API address: mforch's API (POST /invoke/{function}, GET /status)\n"+
		"and, unless --openfaas=false or --openfaas-http is set, the OpenFaaS provider API (/system/*, /function/*,\n"+
		"/async-function/*, /healthz). An OpenFaaS gateway on the same host listens on :8080 itself: then use another port")
	grace := fs.Duration("grace", 2*time.Minute, "on SIGTERM: how long running jobs may take to finish before their workers are powered off\n"+
		"(queued invocations stay in --store and run after the next start)")
	allowHosts := fs.String("http-allow-host", "", "comma-separated host names the HTTP API answers to besides IP addresses and localhost\n"+
		"(a request naming another host in its Host header is refused: DNS rebinding)")
	allowOrigins := fs.String("http-allow-origin", "", "comma-separated origins (http://gateway:8080) whose web pages may call the HTTP API from a browser\n"+
		"(e.g. the OpenFaaS gateway's UI); other cross-origin requests are refused")
	var of openfaasFlags
	of.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, err := c.start(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	creds, err := of.credentials(r.Log)
	if err != nil {
		return err
	}
	// One guard on every route of every listener: Host and Origin checks,
	// the credentials, JSON on state-changing routes, body size and time
	// limits (orchestrator/httpguard).
	guard := httpguard.Config{Open: []string{"/healthz"}, Log: r.Log.With("api", "http"),
		User: creds.User, Password: creds.Password, RawBody: openfaas.InvocationRoutes,
		AllowHosts: splitList(*allowHosts), AllowOrigins: splitList(*allowOrigins)}
	if of.enabled {
		// As in OpenFaaS: the gateway invokes functions without
		// credentials (it is the public face); everything else,
		// mforch's own API included, needs them.
		guard.Open = append(guard.Open, openfaas.InvocationRoutes...)
	}
	var handler http.Handler = r.Orch.Handler()
	var servers []*http.Server
	var provider *openfaas.Provider
	if of.enabled {
		fallback := handler
		if of.addr != "" {
			fallback = nil // a listener of its own: only provider routes there
		}
		if provider, err = of.provider(r, fallback, creds); err != nil {
			return err
		}
		if of.addr == "" {
			handler = provider.Handler()
		} else {
			servers = append(servers, httpguard.Server(of.addr, httpguard.Wrap(provider.Handler(), guard)))
		}
	}
	servers = append([]*http.Server{httpguard.Server(*httpAddr, httpguard.Wrap(handler, guard))}, servers...)
	errc := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { errc <- srv.ListenAndServe() }()
	}
	r.Log.Info("HTTP API listening", "addr", *httpAddr)
	if of.enabled {
		addr := *httpAddr
		if of.addr != "" {
			addr = of.addr
		}
		r.Log.Info("OpenFaaS provider API listening (point the gateway's functions_provider_url here)",
			"url", "http://"+addr+"/", "user_functions", of.functions)
	}
	var serveErr error
	select {
	case <-ctx.Done():
		r.Log.Info("shutting down")
	case serveErr = <-errc:
		if errors.Is(serveErr, http.ErrServerClosed) {
			serveErr = nil
		}
	}
	// Stop accepting connections and admitting work, let running jobs
	// finish within the grace period, then power the workers off. Sync
	// callers of queued invocations are answered (503) as the orchestrator
	// releases them, so the HTTP servers' shutdown can complete.
	sctx, cancel := context.WithTimeout(context.Background(), *grace+10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() { defer wg.Done(); srv.Shutdown(sctx) }()
	}
	gctx, gcancel := context.WithTimeout(context.Background(), *grace)
	r.Orch.Shutdown(gctx)
	gcancel()
	wg.Wait()
	if provider != nil {
		// Async calls still queued fail when the orchestrator closes; give
		// their callbacks a moment to go out.
		if err := provider.Close(sctx); err != nil {
			r.Log.Warn("OpenFaaS provider shutdown", "err", err)
		}
	}
	return serveErr
}

// openfaasFlags configure the OpenFaaS provider API (docs/openfaas.md).
type openfaasFlags struct {
	enabled                    bool
	addr, authDir, state, list string
	callbackAllow              string
	functions                  []string
}

func (o *openfaasFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&o.enabled, "openfaas", true, "serve the OpenFaaS provider API (faas-provider v0.25), so an OpenFaaS gateway and faas-cli work with mforch")
	fs.StringVar(&o.addr, "openfaas-http", "", "serve the provider API on this address instead of on --http's listener")
	fs.StringVar(&o.authDir, "openfaas-auth", "", "folder with basic-auth-user and basic-auth-password (the gateway's secret_mount_path layout),\n"+
		"created with user admin and a random password (files 0600, folder 0700) if missing: every HTTP route\n"+
		"requires these credentials (mforch's own API and /system/*), except /healthz, /function/* and\n"+
		"/async-function/*, which an OpenFaaS gateway calls without them\n"+
		"(default: $STATE_DIRECTORY/auth, else $XDG_STATE_HOME/microfaas/auth, else ~/.local/state/microfaas/auth)")
	fs.StringVar(&o.list, "openfaas-functions", "", "comma-separated user functions in the worker image (mfbuild --function NAME=...),\n"+
		"deployable as image microfaas/fn:NAME; built-ins deploy as microfaas/NAME")
	fs.StringVar(&o.callbackAllow, "openfaas-callback-allow", "", "comma-separated hosts, addresses or CIDR prefixes async calls' X-Callback-Url may name\n"+
		"(others get 400). Empty: any host")
	fs.StringVar(&o.state, "openfaas-state", "", "file that keeps deployed functions and secrets across restarts (empty: in memory)")
}

// credentials reads --openfaas-auth's folder (by default the state
// folder's), creating credentials there if it has none. The API is never
// served without them. The password itself is never logged.
func (o *openfaasFlags) credentials(log *slog.Logger) (*auth.BasicAuthCredentials, error) {
	dir := o.authDir
	if dir == "" {
		var err error
		if dir, err = httpguard.DefaultCredentialsDir(); err != nil {
			return nil, err
		}
	}
	c, created, err := httpguard.LoadOrCreateCredentials(dir)
	if err != nil {
		return nil, fmt.Errorf("API credentials (--openfaas-auth): %w", err)
	}
	reader := "mforch status and loadgen read them from there"
	if o.authDir != "" {
		reader = "mforch status and loadgen read them with --auth " + o.authDir
	}
	msg := "HTTP API credentials (HTTP basic auth; " + reader + ")"
	if created {
		msg = "HTTP API credentials generated (HTTP basic auth; " + reader + ")"
	}
	log.Info(msg, "user", c.User, "password_file", filepath.Join(dir, httpguard.PasswordFile))
	return &auth.BasicAuthCredentials{User: c.User, Password: c.Password}, nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func (o *openfaasFlags) provider(r *rig.Rig, fallback http.Handler, creds *auth.BasicAuthCredentials) (*openfaas.Provider, error) {
	for _, n := range strings.Split(o.list, ",") {
		if n = strings.TrimSpace(n); n != "" {
			o.functions = append(o.functions, n)
		}
	}
	cfg := openfaas.Config{Orchestrator: r.Orch, UserFunctions: o.functions, StateFile: o.state,
		Fallback: fallback, Version: buildVersion(), Log: r.Log.With("api", "openfaas"), Auth: creds}
	for _, a := range strings.Split(o.callbackAllow, ",") {
		if a = strings.TrimSpace(a); a != "" {
			cfg.CallbackAllow = append(cfg.CallbackAllow, a)
		}
	}
	p, err := openfaas.New(cfg)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// buildVersion is mforch's module version, for /system/info.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
