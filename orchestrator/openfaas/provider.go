// Package openfaas serves the OpenFaaS provider API (github.com/openfaas/faas-provider)
// in front of a MicroFaaS orchestrator, so an unmodified OpenFaaS gateway
// pointed at mforch (functions_provider_url) and faas-cli pointed at that
// gateway deploy and invoke functions on MicroFaaS workers.
//
// A "function" here is a deployment whose image is a function baked into the
// worker image (a built-in workload, microfaas/cascading_sha256, or a user
// function in the worker initramfs, microfaas/fn:wordcount) or any other OCI
// image, pulled at deploy time into a bundle the workers fetch
// (orchestrator/deploy); an OpenFaaS watchdog image gets its calls as HTTP
// requests and answers them unchanged. Workers are shared by every
// function: any worker runs any function, one job at a time, so replica
// counts describe the cluster, not one function. docs/openfaas.md has the
// whole mapping.
package openfaas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/openfaas/faas-provider/auth"
	"github.com/openfaas/faas-provider/logs"
	"github.com/openfaas/faas-provider/types"

	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/deploy"
	"github.com/microfaas/microfaas/orchestrator/httpguard"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/runtime/functions"
)

// Namespace is the only namespace served. OpenFaaS namespaces isolate
// deployments on Kubernetes; MicroFaaS has one pool of workers, so one
// namespace (the name faasd and faas-netes use by default) says so honestly.
const Namespace = "openfaas-fn"

// InvocationRoutes are the path prefixes that invoke functions. As in
// OpenFaaS they need no credentials (the gateway forwards calls without
// them) and their bodies are the function's input, of any content type.
var InvocationRoutes = []string{"/function/", "/async-function/"}

// nameExpression is faas-provider's bootstrap.NameExpression: the characters
// a function name may have in the routes. Copied rather than imported so that
// importing this package does not create bootstrap's global router.
const nameExpression = "-a-zA-Z_0-9."

// Backend is what the provider needs from the orchestrator;
// *orchestrator.Orchestrator implements it.
type Backend interface {
	SubmitJob(spec orchestrator.JobSpec) (*orchestrator.Invocation, error)
	InvokeJob(ctx context.Context, spec orchestrator.JobSpec) (*orchestrator.Invocation, error)
	Warm(function string, n int) int
	Status() orchestrator.Status
}

// Config sets up a Provider. Zero values take the defaults noted.
type Config struct {
	Orchestrator Backend
	// Builtins are the built-in functions workers run (functions.Names()).
	Builtins []string
	// Deploys, if set, pulls and keeps the images deployed at run time
	// (any image that is not microfaas/NAME or microfaas/fn:NAME). Nil:
	// such deployments are refused.
	Deploys *deploy.Store
	// Archs are the architectures (target names) of the cluster's workers:
	// a pulled image is resolved for each.
	Archs []string
	// Auth, if set, is required on every /system/* route (HTTP basic auth,
	// as faas-provider's bootstrap does it). Nil leaves them open.
	Auth *auth.BasicAuthCredentials
	// StateFile, if set, keeps deployments and secrets across restarts
	// (JSON, mode 0600, since it holds secret values).
	StateFile string
	// QueueTimeout bounds how long a synchronous call waits for a worker
	// before it is answered 503 (2 min). A call that has started runs to
	// its own timeout.
	QueueTimeout time.Duration
	// MaxBody bounds request bodies (8 MiB: a job travels in one protocol
	// frame of at most 16 MiB, and JSON escaping can double a body).
	MaxBody int64
	// LogLines is how many log messages are kept per function (1000).
	LogLines int
	// LogsTimeout bounds one /system/logs request, follow included (5 min).
	LogsTimeout time.Duration
	// Version and Commit are reported by /system/info.
	Version, Commit string
	// Fallback serves every path the provider does not route (mforch's own
	// /invoke and /status), so both APIs share one listener.
	Fallback http.Handler
	// CallbackAllow, if set, restricts X-Callback-Url to these hosts: exact
	// host names, IP addresses or CIDR prefixes (e.g. "gateway",
	// "10.0.0.0/8"). Others get 400, so an async call cannot make mforch
	// post to an arbitrary address (its own API, a metadata service). The
	// list holds for every redirect a callback follows and for the address
	// each connection is actually made to.
	CallbackAllow []string
	// Shared, if set, shares the deployments and secrets with the other
	// mforch instances of an installation (shared.go); StateFile then
	// only keeps this instance's copy.
	Shared SharedState
	Log    *slog.Logger
}

// Provider serves the OpenFaaS provider API. Create it with New.
type Provider struct {
	cfg     Config
	log     *slog.Logger
	handler http.Handler
	logs    *logStore
	// callbacks posts async results within the callback allow-list.
	callbacks *http.Client

	mu      sync.Mutex
	fns     map[string]*function
	secrets map[string]types.Secret
	// wanted holds the functions the gateway asked to scale from zero and
	// that it has not yet seen a replica of, with the time the request
	// lapses; see functionStatus.
	wanted map[string]time.Time

	async sync.WaitGroup // async invocations whose callback is pending

	// shared holds the values last written to or read from
	// Config.Shared, by key (shared.go); stopShared ends the watch.
	shared     map[string][]byte
	stopShared func()
	// relay, when Config.Shared is a CallbackRelay, sends async callbacks
	// (callback.go); relayClosed: Close has begun, no more are taken.
	relay       CallbackRelay
	relayClosed bool
}

// function is one deployment.
type function struct {
	Deployment types.FunctionDeployment `json:"deployment"`
	Created    time.Time                `json:"created"`
	// Invocations counts finished invocations (reported as invocationCount).
	Invocations uint64 `json:"invocations"`
	target      target
}

// New checks cfg, loads the state file if there is one, and builds the routes.
func New(cfg Config) (*Provider, error) {
	if cfg.Orchestrator == nil {
		return nil, errors.New("openfaas provider: no orchestrator")
	}
	if cfg.Builtins == nil {
		cfg.Builtins = functions.Names()
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = 2 * time.Minute
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 8 << 20
	}
	if cfg.LogLines <= 0 {
		cfg.LogLines = 1000
	}
	if cfg.LogsTimeout <= 0 {
		cfg.LogsTimeout = 5 * time.Minute
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	p := &Provider{cfg: cfg, log: cfg.Log, logs: newLogStore(cfg.LogLines),
		callbacks: callbackClient(cfg.CallbackAllow, callbackTimeout),
		fns:       map[string]*function{}, secrets: map[string]types.Secret{}, wanted: map[string]time.Time{}}
	if err := p.load(); err != nil {
		return nil, err
	}
	if cfg.Shared != nil {
		if err := p.startShared(); err != nil {
			return nil, fmt.Errorf("openfaas provider: shared deployments: %w", err)
		}
		if r, ok := cfg.Shared.(CallbackRelay); ok {
			p.relay = r
			r.OnCallback(p.relayedCallback)
		}
	}
	p.handler = p.routes()
	return p, nil
}

// Handler is the provider's HTTP API (and Config.Fallback for other paths).
func (p *Provider) Handler() http.Handler { return p.handler }

// Close waits up to ctx for async invocations to finish and post their
// callbacks.
func (p *Provider) Close(ctx context.Context) error {
	if p.stopShared != nil {
		p.stopShared()
	}
	if p.relay != nil {
		p.relay.OnCallback(nil)
		p.mu.Lock()
		p.relayClosed = true // a callback claimed meanwhile is not started after the Wait below
		p.mu.Unlock()
	}
	done := make(chan struct{})
	go func() { p.async.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("openfaas provider: async invocations still running: %w", ctx.Err())
	}
}

// routes registers the handlers on the paths and methods of faas-provider
// v0.25.4's bootstrap.Serve. bootstrap.Serve itself is not used: it keeps
// one global router, listens on its own port on all interfaces, exits the
// process on errors and registers Prometheus collectors globally (a second
// provider in one process panics), none of which suits mforch or tests.
func (p *Provider) routes() http.Handler {
	h := types.FaaSHandlers{
		FunctionLister: p.listFunctions,
		DeployFunction: p.deployFunction,
		UpdateFunction: p.updateFunction,
		DeleteFunction: p.deleteFunction,
		FunctionStatus: p.functionStatus,
		ScaleFunction:  p.scaleFunction,
		Secrets:        p.secretsHandler,
		Logs:           logs.NewLogHandlerFunc(p.logs, p.cfg.LogsTimeout),
		Info:           p.info,
		ListNamespaces: p.listNamespaces,
		Health:         p.health,
		FunctionProxy:  p.proxy,
	}
	if c := p.cfg.Auth; c != nil {
		// The same set bootstrap.Serve protects, plus ListNamespaces, which
		// it leaves open though it is under /system like the rest; the
		// gateway sends its credentials there too.
		for _, f := range []*http.HandlerFunc{&h.FunctionLister, &h.DeployFunction, &h.DeleteFunction,
			&h.UpdateFunction, &h.FunctionStatus, &h.ScaleFunction, &h.Info, &h.Secrets, &h.Logs, &h.ListNamespaces} {
			*f = auth.DecorateWithBasicAuth(*f, c)
		}
	}
	r := mux.NewRouter()
	name := "{name:[" + nameExpression + "]+}"
	r.HandleFunc("/system/functions", h.FunctionLister).Methods(http.MethodGet)
	r.HandleFunc("/system/functions", h.DeployFunction).Methods(http.MethodPost)
	r.HandleFunc("/system/functions", h.DeleteFunction).Methods(http.MethodDelete)
	r.HandleFunc("/system/functions", h.UpdateFunction).Methods(http.MethodPut)
	r.HandleFunc("/system/function/"+name, h.FunctionStatus).Methods(http.MethodGet)
	r.HandleFunc("/system/scale-function/"+name, h.ScaleFunction).Methods(http.MethodPost)
	r.HandleFunc("/system/info", h.Info).Methods(http.MethodGet)
	r.HandleFunc("/system/secrets", h.Secrets).Methods(http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete)
	r.HandleFunc("/system/logs", h.Logs).Methods(http.MethodGet)
	r.HandleFunc("/system/namespaces", h.ListNamespaces).Methods(http.MethodGet)
	// No MutateNamespace: there is one namespace. bootstrap.Serve answers
	// 501 on this path when the handler is nil; so do we.
	r.HandleFunc("/system/namespace/{name:["+nameExpression+"]*}", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Feature not implemented in this version of OpenFaaS", http.StatusNotImplemented)
	}).Methods(http.MethodGet)
	r.HandleFunc("/function/"+name, h.FunctionProxy)
	r.HandleFunc("/function/"+name+"/", h.FunctionProxy)
	r.HandleFunc("/function/"+name+"/{params:.*}", h.FunctionProxy)
	// Async without the OpenFaaS queue-worker: mforch queues the call itself
	// (the same paths and method as the gateway's queued proxy).
	r.HandleFunc("/async-function/"+name, p.asyncProxy).Methods(http.MethodPost)
	r.HandleFunc("/async-function/"+name+"/", p.asyncProxy).Methods(http.MethodPost)
	r.HandleFunc("/async-function/"+name+"/{params:.*}", p.asyncProxy).Methods(http.MethodPost)
	r.HandleFunc("/healthz", h.Health).Methods(http.MethodGet)
	if p.cfg.Fallback != nil {
		r.NotFoundHandler = p.cfg.Fallback
	}
	return r
}

// checkNamespace accepts the namespace a request names: none, or ours.
func checkNamespace(ns string) error {
	if ns == "" || ns == Namespace {
		return nil
	}
	return fmt.Errorf("namespace %q is not served by MicroFaaS: its one namespace is %s", ns, Namespace)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// errBodyTooLarge is a JSON body over readJSON's bound (413).
var errBodyTooLarge = errors.New("request body too large")

// readJSON decodes a request body of at most max bytes into v. A body
// declared as anything but JSON is refused (httpguard.ErrNotJSON, 415),
// here as well as in the guard, so a provider served without the guard
// still cannot be driven by a browser form or a text/plain fetch.
func readJSON(r *http.Request, max int64, v any) error {
	if err := httpguard.CheckJSON(r); err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return fmt.Errorf("reading the request body: %w", err)
	}
	if int64(len(b)) > max {
		return fmt.Errorf("%w: more than %d bytes", errBodyTooLarge, max)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("request body is not valid JSON for this route: %w", err)
	}
	return nil
}

// readStatus is the HTTP status for a readJSON error.
func readStatus(err error) int {
	switch {
	case errors.Is(err, httpguard.ErrNotJSON):
		return http.StatusUnsupportedMediaType
	case errors.Is(err, errBodyTooLarge):
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

// listFunctions: GET /system/functions -> []types.FunctionStatus.
func (p *Provider) listFunctions(w http.ResponseWriter, r *http.Request) {
	if err := checkNamespace(r.URL.Query().Get("namespace")); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ws := p.workers()
	p.mu.Lock()
	p.syncLocked()
	out := make([]types.FunctionStatus, 0, len(p.fns))
	for _, fn := range p.fns {
		out = append(out, fn.status(ws.connected))
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, http.StatusOK, out)
}

// functionStatus: GET /system/function/{name} -> types.FunctionStatus.
func (p *Provider) functionStatus(w http.ResponseWriter, r *http.Request) {
	if err := checkNamespace(r.URL.Query().Get("namespace")); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	name := mux.Vars(r)["name"]
	ws := p.workers()
	// The ETag is the revision of what this instance shows: a read
	// between another instance's write and its arrival here waits for it.
	var rev uint64
	for try := 0; ; try++ {
		var v []byte
		v, rev = p.revision(r.Context(), name)
		p.mu.Lock()
		if rev == 0 || bytes.Equal(p.shared["fn."+name], v) {
			break
		}
		if try == etagTries {
			rev = 0 // not caught up: no ETag rather than a wrong one
			break
		}
		p.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	p.syncLocked()
	fn, ok := p.fns[name]
	var st types.FunctionStatus
	if ok {
		st = fn.status(ws.connected)
	}
	until, wanted := p.wanted[name]
	if wanted && (ws.connected > 0 || time.Now().After(until)) {
		// The gateway stops polling once it sees a replica and sends the
		// call; if that worker is gone by then, the call boots another.
		delete(p.wanted, name)
		wanted = false
	}
	p.mu.Unlock()
	if !ok {
		http.Error(w, fmt.Sprintf("function %s not found", name), http.StatusNotFound)
		return
	}
	// After a scale request the gateway holds the call and polls here until
	// a replica is available; it does not ask to scale again. If the worker
	// booted for it was taken by other work and went off before the gateway
	// saw it, nothing would ever become available and the call would hang
	// for the gateway's whole holding time (100 s), so boot another one.
	if wanted && ws.active == 0 && ws.off > 0 {
		p.log.Info("scale from zero: the worker booted for this function went to other work; powering another on", "function", name)
		p.warm(name)
	}
	if rev > 0 {
		// Send it back in If-Match with a PUT: an update based on this
		// read fails (409) if the function changed meanwhile.
		w.Header().Set("ETag", fmt.Sprintf(`"%d"`, rev))
	}
	writeJSON(w, http.StatusOK, st)
}

func (fn *function) status(connected uint64) types.FunctionStatus {
	d := fn.Deployment
	return types.FunctionStatus{
		Name: d.Service, Image: d.Image, Namespace: Namespace, EnvProcess: d.EnvProcess,
		EnvVars: d.EnvVars, Constraints: d.Constraints, Secrets: d.Secrets, Labels: d.Labels,
		Annotations: d.Annotations, Limits: d.Limits, Requests: d.Requests,
		ReadOnlyRootFilesystem: d.ReadOnlyRootFilesystem,
		InvocationCount:        float64(fn.Invocations),
		// Both counts are the workers that can take a call now, booted and
		// connected (idle, or running a job: a call then queues for the
		// next free worker or boots another). A booting worker counts in
		// neither. The gateway, finding replicas 0, asks to scale and then
		// polls for an available replica; had it seen a booting worker as a
		// replica it would skip the scale request and just poll, and if that
		// worker then went to another call and off, it would wait its whole
		// holding time (100 s) for nothing. Measured, before this: 104 s.
		Replicas: connected, AvailableReplicas: connected,
		CreatedAt: fn.Created,
	}
}

// workerCounts are the workers by what they can do for a call.
type workerCounts struct {
	connected uint64 // idle or working: can take a call now
	active    uint64 // connected or booting
	off       uint64 // can be powered on
}

func (p *Provider) workers() workerCounts {
	var c workerCounts
	for _, w := range p.cfg.Orchestrator.Status().Workers {
		switch w.State {
		case state.Idle, state.Working:
			c.connected++
			c.active++
		case state.Booting:
			c.active++
		case state.Off:
			c.off++
		}
	}
	return c
}

// scaleHold is how long a scale request stands without a call: a little
// more than the gateway holds a call while it waits for a replica (1000
// polls 100 ms apart).
const scaleHold = 2 * time.Minute

// scaleFunction: POST /system/scale-function/{name} with types.ScaleServiceRequest.
// Replicas > 0 with no worker up or booting powers one worker on now, so
// the call the gateway holds finds it connected. Replicas 0 needs nothing:
// workers power off by themselves after their idle timeout.
func (p *Provider) scaleFunction(w http.ResponseWriter, r *http.Request) {
	if err := checkNamespace(r.URL.Query().Get("namespace")); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	name := mux.Vars(r)["name"]
	var req types.ScaleServiceRequest
	if err := readJSON(r, 1<<20, &req); err != nil {
		http.Error(w, err.Error(), readStatus(err))
		return
	}
	if req.ServiceName != "" && req.ServiceName != name {
		http.Error(w, fmt.Sprintf("serviceName %q does not match the path's function %q", req.ServiceName, name), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.syncLocked()
	_, ok := p.fns[name]
	if ok && req.Replicas > 0 {
		p.wanted[name] = time.Now().Add(scaleHold)
	} else {
		delete(p.wanted, name)
	}
	p.mu.Unlock()
	if !ok {
		http.Error(w, fmt.Sprintf("function %s not found", name), http.StatusNotFound)
		return
	}
	if req.Replicas > 0 {
		if ws := p.workers(); ws.active == 0 && ws.off > 0 {
			p.log.Info("scale from zero: powering a worker on", "function", name, "replicas", req.Replicas)
			p.warm(name)
		}
	}
	w.WriteHeader(http.StatusAccepted)
}

// warm powers one off worker on for function without giving it a job (it
// boots with the function's bundle if it was deployed at run time); it
// waits max(IdleTimeout, 2 s) for the call the gateway is holding.
func (p *Provider) warm(function string) {
	if p.cfg.Orchestrator.Warm(function, 1) == 0 {
		p.log.Warn("scale from zero: no worker was off to power on")
	}
}

// info: GET /system/info -> types.ProviderInfo.
func (p *Provider) info(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, types.ProviderInfo{
		Name: "microfaas", Orchestration: "microfaas",
		Version: &types.VersionInfo{Release: p.cfg.Version, SHA: p.cfg.Commit},
	})
}

// listNamespaces: GET /system/namespaces -> ["openfaas-fn"].
func (p *Provider) listNamespaces(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, []string{Namespace})
}

// health: GET /healthz.
func (p *Provider) health(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, "OK")
}
