package rig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/openfaas/faas-provider/auth"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/deploy"
	"github.com/microfaas/microfaas/orchestrator/httpguard"
	"github.com/microfaas/microfaas/orchestrator/openfaas"
	"github.com/microfaas/microfaas/target"
)

// ServeConfig is how a started rig serves its HTTP APIs (mforch serve).
type ServeConfig struct {
	HTTP         string        // mforch's API, and the provider API unless OpenFaaSHTTP is set
	Grace        time.Duration // on shutdown: how long running jobs may take
	AllowHosts   []string      // Host headers answered besides IP addresses and localhost
	AllowOrigins []string      // origins whose pages may call the API from a browser

	OpenFaaS      bool     // serve the OpenFaaS provider API
	OpenFaaSHTTP  string   // the provider API's own address (empty: on HTTP's listener)
	AuthDir       string   // credentials folder (empty: the state folder's)
	StateFile     string   // deployed functions and secrets (empty: in memory)
	CallbackAllow []string // hosts async callbacks may name (empty: any)
	Version       string   // for /system/info
}

// DeployConfig is where mforch serve keeps the functions deployed at run
// time and how it pulls their images.
type DeployConfig struct {
	Dir            string   // bundles and deployments.json (empty: bundles/ in the state folder)
	RegistryConfig string   // docker config.json with registry credentials (empty: anonymous)
	Insecure       []string // registry hosts pulled from over plain HTTP
}

// OpenDeploys opens the deploy.Store of c, for Config.Deploys.
func OpenDeploys(c DeployConfig, log *slog.Logger) (*deploy.Store, error) {
	res, err := deploy.NewResolver(c.RegistryConfig, c.Insecure)
	if err != nil {
		return nil, err
	}
	s, err := deploy.New(deploy.Config{Dir: c.Dir, Resolver: res, Log: log.With("part", "deploy")})
	if err != nil {
		return nil, err
	}
	creds := c.RegistryConfig
	if creds == "" {
		creds = "none (anonymous pulls)"
	}
	log.Info("run-time deploys", "bundles", s.Dir(), "deployed", len(s.List()), "registry_config", creds, "insecure_registries", c.Insecure)
	return s, nil
}

// Archs are the architectures (target names) of the cluster's workers,
// sorted: the platforms every run-time deployment is resolved for.
func Archs(cl *cluster.Cluster) []string {
	var out []string
	for _, w := range cl.Workers {
		a := target.ARMv7.Name // a BeagleBone
		if w.Kind == cluster.KindVM {
			a = w.VM.Target().Name
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// Serve serves r's HTTP APIs until ctx ends or a listener fails, then
// shuts down: no new connections or work, running jobs get c.Grace to
// finish, then the workers are powered off.
func Serve(ctx context.Context, r *Rig, c ServeConfig) error {
	creds, err := Credentials(c.AuthDir, r.Log)
	if err != nil {
		return err
	}
	// One guard on every route of every listener: Host and Origin checks,
	// the credentials, JSON on state-changing routes, body size and time
	// limits (orchestrator/httpguard).
	guard := httpguard.Config{Open: []string{"/healthz"}, Log: r.Log.With("api", "http"),
		User: creds.User, Password: creds.Password, RawBody: openfaas.InvocationRoutes,
		AllowHosts: c.AllowHosts, AllowOrigins: c.AllowOrigins}
	if c.OpenFaaS {
		// As in OpenFaaS: the gateway invokes functions without
		// credentials (it is the public face); everything else,
		// mforch's own API included, needs them.
		guard.Open = append(guard.Open, openfaas.InvocationRoutes...)
	}
	var handler http.Handler = r.Orch.Handler()
	archs := Archs(r.Cluster)
	// The native deploy routes (mforch deploy), beside mforch's API: on
	// the Store, or with --queue through the provider's shared path
	// (routed below, once the provider exists).
	var native http.Handler
	if r.Deploys != nil {
		native = r.Deploys.Handler(archs)
		mux := http.NewServeMux()
		dh := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { native.ServeHTTP(w, req) })
		mux.Handle("/functions", dh)
		mux.Handle("/functions/", dh)
		mux.Handle("/", handler)
		handler = mux
	}
	var servers []*http.Server
	var provider *openfaas.Provider
	if c.OpenFaaS {
		fallback := handler
		if c.OpenFaaSHTTP != "" {
			fallback = nil // a listener of its own: only provider routes there
		}
		var shared openfaas.SharedState
		if r.queue != nil {
			// Deployments and secrets are the installation's, not this instance's.
			if shared, err = r.queue.State(ctx, "microfaas_openfaas"); err != nil {
				return err
			}
		}
		provider, err = openfaas.New(openfaas.Config{Orchestrator: r.Orch, Deploys: r.Deploys, Archs: archs,
			StateFile: c.StateFile, Fallback: fallback, Version: c.Version, Shared: shared,
			Log: r.Log.With("api", "openfaas"), Auth: creds, CallbackAllow: c.CallbackAllow})
		if err != nil {
			return err
		}
		if shared != nil && r.Deploys != nil {
			native = deploy.Handler(provider.Native(), archs) // shared with the other instances too
		}
		if c.OpenFaaSHTTP == "" {
			handler = provider.Handler()
		} else {
			servers = append(servers, httpguard.Server(c.OpenFaaSHTTP, httpguard.Wrap(provider.Handler(), guard)))
		}
	}
	if r.queue != nil && !c.OpenFaaS && r.Deploys != nil {
		r.Log.Warn("with --openfaas=false, native deploys (mforch deploy) are this instance's only: the other --queue instances do not see them")
	}
	servers = append([]*http.Server{httpguard.Server(c.HTTP, httpguard.Wrap(handler, guard))}, servers...)
	errc := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { errc <- srv.ListenAndServe() }()
	}
	r.Log.Info("HTTP API listening", "addr", c.HTTP)
	if c.OpenFaaS {
		addr := c.HTTP
		if c.OpenFaaSHTTP != "" {
			addr = c.OpenFaaSHTTP
		}
		r.Log.Info("OpenFaaS provider API listening (point the gateway's functions_provider_url here)",
			"url", "http://"+addr+"/", "run_time_deploys", r.Deploys != nil, "archs", archs)
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
	sctx, cancel := context.WithTimeout(context.Background(), c.Grace+10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() { defer wg.Done(); srv.Shutdown(sctx) }()
	}
	gctx, gcancel := context.WithTimeout(context.Background(), c.Grace)
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

// Credentials reads the API credentials from dir (empty: the state
// folder's auth folder), creating them there if it has none. The API is
// never served without them. The password itself is never logged.
func Credentials(dir string, log *slog.Logger) (*auth.BasicAuthCredentials, error) {
	given := dir
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
	reader := "mforch status, loadgen and deploy read them from there"
	if given != "" {
		reader = "mforch status, loadgen and deploy read them with --auth " + given
	}
	msg := "HTTP API credentials (HTTP basic auth; " + reader + ")"
	if created {
		msg = "HTTP API credentials generated (HTTP basic auth; " + reader + ")"
	}
	log.Info(msg, "user", c.User, "password_file", filepath.Join(dir, httpguard.PasswordFile))
	return &auth.BasicAuthCredentials{User: c.User, Password: c.Password}, nil
}

// SplitList splits a comma-separated list, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
