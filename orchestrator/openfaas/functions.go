package openfaas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/openfaas/faas-provider/types"

	"github.com/microfaas/microfaas/orchestrator/deploy"
)

// Images that name a function baked into the worker image: they need no
// pull. Any other image is pulled and deployed at run time
// (orchestrator/deploy).
const (
	// ImagePrefix + NAME is the built-in function NAME.
	ImagePrefix = "microfaas/"
	// UserImage + ":" + NAME is the user function NAME (/functions/NAME in
	// the worker initramfs, built in with mfbuild --function). The tag
	// names the function because the image, the worker's initramfs, is
	// the same for all of them.
	UserImage = "microfaas/fn"
)

// target is what a deployment runs on a worker.
type target struct {
	Function string // the job's f_id
	// User: a stdin/stdout function (a user function of the worker
	// image, or an image deployed at run time that is not a watchdog).
	User bool
	// Deployed: an image deployed at run time (deploy.Store holds its
	// bundles, under the deployment's name).
	Deployed bool
	// Watchdog: a deployed OpenFaaS watchdog image; calls go to it as HTTP
	// requests and its responses come back unchanged.
	Watchdog bool
}

var validName = regexp.MustCompile(`^[` + nameExpression + `]+$`)

// checkUserFunctionName rejects user function names the worker could not
// look up, or that a built-in would shadow (the worker tries built-ins first).
func checkUserFunctionName(n string, builtins []string) error {
	if !validName.MatchString(n) || n == "." || n == ".." {
		return fmt.Errorf("user function %q: use letters, digits, '-', '_' and '.'", n)
	}
	if slices.Contains(builtins, n) {
		return fmt.Errorf("user function %q has the name of a built-in function, which the worker would run instead", n)
	}
	return nil
}

// errNoDeploys: an image to pull, and no deploy.Store to pull it with.
var errNoDeploys = errors.New("run-time deploys are not enabled in this mforch")

// resolveImage maps a deployment's image to what a worker runs. An image
// that names no baked-in function is pulled at deploy time (pull true; the
// target's Watchdog is then set from the pulled image).
func (p *Provider) resolveImage(service, image string) (t target, pull bool, err error) {
	if strings.HasPrefix(image, UserImage+":") {
		name := strings.TrimPrefix(image, UserImage+":")
		if err := checkUserFunctionName(name, p.cfg.Builtins); err != nil {
			return target{}, false, fmt.Errorf("image %q: %w", image, err)
		}
		// Whether a worker image holds it is known from the workers'
		// hellos: a call of a function none has is answered 404.
		return target{Function: name, User: true}, false, nil
	}
	if rest, ok := strings.CutPrefix(image, ImagePrefix); ok {
		// A :latest tag means the same image; any other tag would promise a
		// version we cannot select.
		name, tag, tagged := strings.Cut(rest, ":")
		if tagged && tag != "latest" {
			return target{}, false, fmt.Errorf("image %q: built-in functions have no versions, only the one in the worker image (drop the tag or use :latest)", image)
		}
		if slices.Contains(p.cfg.Builtins, name) {
			return target{Function: name}, false, nil
		}
		return target{}, false, fmt.Errorf("image %q: no built-in function %q: %s names the functions baked into the worker image: "+
			"%sNAME for a built-in (%s), %s:NAME for a user function (mfbuild worker --function NAME=PATH); any other image is pulled",
			image, name, ImagePrefix, ImagePrefix, strings.Join(p.cfg.Builtins, ", "), UserImage)
	}
	if p.cfg.Deploys == nil {
		return target{}, false, fmt.Errorf("image %q: %w; use %sNAME for a built-in or %s:NAME for a user function in the worker image",
			image, errNoDeploys, ImagePrefix, UserImage)
	}
	return target{Function: service, User: true, Deployed: true}, true, nil
}

// checkDeploymentLocked validates a deployment and resolves its image.
// Called with p.mu held (it reads the secrets).
func (p *Provider) checkDeploymentLocked(d *types.FunctionDeployment) (t target, pull bool, err error) {
	if d.Service == "" {
		return target{}, false, errors.New("service (the function name) is missing")
	}
	if !validName.MatchString(d.Service) {
		return target{}, false, fmt.Errorf("service %q: a function name has letters, digits, '-', '_' and '.'", d.Service)
	}
	if err := checkNamespace(d.Namespace); err != nil {
		return target{}, false, err
	}
	if _, err := execTimeout(d.EnvVars); err != nil {
		return target{}, false, err
	}
	for _, s := range d.Secrets {
		if _, ok := p.secrets[s]; !ok {
			return target{}, false, fmt.Errorf("secret %q not found: create it first (faas-cli secret create %s)", s, s)
		}
	}
	return p.resolveImage(d.Service, d.Image)
}

// execTimeout reads the job timeout from the deployment's environment:
// exec_timeout, as OpenFaaS's watchdog does (seconds, or a Go duration).
// Zero means the orchestrator's default.
func execTimeout(env map[string]string) (time.Duration, error) {
	v, ok := env["exec_timeout"]
	if !ok || v == "" {
		return 0, nil
	}
	secs, err := types.ParseIntOrDuration(v)
	if err == nil && secs > 0 {
		return time.Duration(secs) * time.Second, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return d, nil
	}
	return 0, fmt.Errorf("envVars exec_timeout %q: want seconds (30) or a duration (30s, 500ms)", v)
}

// pull deploys a run-time image through the Store, for every architecture
// the cluster's workers have, and sets the target's Watchdog from it.
func (p *Provider) pull(ctx context.Context, d types.FunctionDeployment, t *target) error {
	rec, err := p.cfg.Deploys.Deploy(ctx, d.Service, d.Image, p.cfg.Archs)
	if err != nil {
		return err
	}
	t.Watchdog = rec.Watchdog
	t.User = !rec.Watchdog
	return nil
}

// refusePull answers a pull that failed with deploy.HTTPStatus: 400 for
// an image that cannot run or a registry that refuses access, 413 for an
// image over the limits, 502 for a registry out of reach.
func refusePull(w http.ResponseWriter, verb string, err error) {
	http.Error(w, "cannot "+verb+": "+err.Error(), deploy.HTTPStatus(err))
}

// deployFunction: POST /system/functions with types.FunctionDeployment. An
// image naming no baked-in function is pulled first (outside the lock:
// it takes time), so it answers 202 only once the function can run.
// Shared by several instances, it is created only if no instance has it
// (409 otherwise, as for a function this instance has).
func (p *Provider) deployFunction(w http.ResponseWriter, r *http.Request) {
	var d types.FunctionDeployment
	if err := readJSON(r, 1<<20, &d); err != nil {
		http.Error(w, err.Error(), readStatus(err))
		return
	}
	p.mu.Lock()
	p.syncLocked()
	t, pull, err := p.checkDeploymentLocked(&d)
	_, exists := p.fns[d.Service]
	p.mu.Unlock()
	if err != nil {
		http.Error(w, "cannot deploy: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !exists && pull {
		// Not pulled over another instance's deployment of it: the
		// shared state answers before this instance has taken it over.
		v, _ := p.revision(r.Context(), d.Service)
		exists = v != nil
	}
	if exists {
		http.Error(w, fmt.Sprintf("function %s already exists: update it with PUT /system/functions", d.Service), http.StatusConflict)
		return
	}
	if pull {
		if err := p.pull(r.Context(), d, &t); err != nil {
			refusePull(w, "deploy", err)
			return
		}
	}
	d.Namespace = Namespace
	created := time.Now().UTC()
	p.mu.Lock()
	rev, err := p.casFunctionLocked(d, created, true, 0)
	if err != nil {
		p.mu.Unlock()
		p.resync("fn." + d.Service)
		if errors.Is(err, ErrConflict) {
			http.Error(w, fmt.Sprintf("function %s already exists (deployed through another mforch instance meanwhile): update it with PUT /system/functions", d.Service), http.StatusConflict)
			return
		}
		http.Error(w, "cannot deploy: sharing the deployment with the other mforch instances failed (is NATS reachable?): "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	p.fns[d.Service] = &function{Deployment: d, Created: created, target: t}
	err = p.saveLocked()
	p.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.log.Info("function deployed", "function", d.Service, "image", d.Image, "runs", t.Function,
		"user", t.User, "deployed", t.Deployed, "watchdog", t.Watchdog)
	etag(w, rev)
	w.WriteHeader(http.StatusAccepted)
}

// updateFunction: PUT /system/functions with types.FunctionDeployment; 404
// for a function that is not deployed. Creation time and invocation count
// carry over. A pulled image is pulled again (a moving tag resolves anew);
// a deployment that no longer needs its pulled image gives it up.
func (p *Provider) updateFunction(w http.ResponseWriter, r *http.Request) {
	match, err := ifMatch(r.Header.Get("If-Match"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var d types.FunctionDeployment
	if err := readJSON(r, 1<<20, &d); err != nil {
		http.Error(w, err.Error(), readStatus(err))
		return
	}
	p.mu.Lock()
	p.syncLocked()
	_, exists := p.fns[d.Service]
	var t target
	var pull bool
	if exists {
		t, pull, err = p.checkDeploymentLocked(&d)
	}
	p.mu.Unlock()
	if !exists {
		http.Error(w, fmt.Sprintf("function %s not found: deploy it with POST /system/functions", d.Service), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, "cannot update: "+err.Error(), http.StatusBadRequest)
		return
	}
	if pull {
		if err := p.pull(r.Context(), d, &t); err != nil {
			refusePull(w, "update", err)
			return
		}
	} else if p.cfg.Deploys != nil {
		if err := p.cfg.Deploys.Delete(d.Service); err != nil && !errors.Is(err, deploy.ErrNotDeployed) {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	d.Namespace = Namespace
	p.mu.Lock()
	fn, exists := p.fns[d.Service]
	created := time.Now().UTC()
	if exists {
		created = fn.Created
	}
	// Shared by several instances: written over the revision the caller
	// read (If-Match), or over the current one; never over a removal.
	rev, err := p.casFunctionLocked(d, created, false, match)
	if err != nil {
		p.mu.Unlock()
		p.resync("fn." + d.Service)
		if errors.Is(err, ErrRemoved) {
			http.Error(w, fmt.Sprintf("function %s was removed by another request while it was updated: deploy it again with POST /system/functions if it is still wanted", d.Service), http.StatusNotFound)
			return
		}
		if errors.Is(err, ErrConflict) {
			http.Error(w, fmt.Sprintf("function %s was changed by another request since it was read (%v): GET /system/function/%s again, apply the change to what it answers and PUT again with its ETag in If-Match",
				d.Service, err, d.Service), http.StatusConflict)
			return
		}
		http.Error(w, "cannot update: sharing the deployment with the other mforch instances failed (is NATS reachable?): "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if !exists { // deleted while the image was pulled
		fn = &function{Created: created}
		p.fns[d.Service] = fn
	}
	fn.Deployment, fn.target = d, t
	err = p.saveLocked()
	p.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.log.Info("function updated", "function", d.Service, "image", d.Image, "deployed", t.Deployed, "watchdog", t.Watchdog)
	etag(w, rev)
	w.WriteHeader(http.StatusAccepted)
}

// deleteFunction: DELETE /system/functions with types.DeleteFunctionRequest.
// A pulled image's bundles are removed with it (deploy.Store's GC). Shared
// by several instances, it is removed at the revision given in If-Match,
// or the one read (409 if it changed meanwhile: an update that comes
// after a removal finds no function, so nothing brings it back).
func (p *Provider) deleteFunction(w http.ResponseWriter, r *http.Request) {
	match, err := ifMatch(r.Header.Get("If-Match"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req types.DeleteFunctionRequest
	if err := readJSON(r, 1<<20, &req); err != nil {
		http.Error(w, err.Error(), readStatus(err))
		return
	}
	if err := checkNamespace(req.Namespace); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.syncLocked()
	fn, ok := p.fns[req.FunctionName]
	if ok {
		_, err = p.casLocked("fn."+req.FunctionName, nil, false, match)
		if errors.Is(err, ErrRemoved) {
			delete(p.shared, "fn."+req.FunctionName)
			err = nil // by another instance; this one had not caught up
		}
	}
	if !ok || err != nil {
		p.mu.Unlock()
		switch {
		case !ok:
			http.Error(w, fmt.Sprintf("function %s not found", req.FunctionName), http.StatusNotFound)
		case errors.Is(err, ErrConflict):
			http.Error(w, fmt.Sprintf("function %s was changed by another request since it was read (%v): GET /system/function/%s again and, if it is still to go, DELETE again (with its ETag in If-Match)",
				req.FunctionName, err, req.FunctionName), http.StatusConflict)
		default:
			http.Error(w, "cannot remove: sharing the removal with the other mforch instances failed (is NATS reachable?): "+err.Error(), http.StatusServiceUnavailable)
		}
		return
	}
	delete(p.fns, req.FunctionName)
	delete(p.wanted, req.FunctionName)
	err = p.saveLocked()
	p.mu.Unlock()
	if fn.target.Deployed {
		if derr := p.cfg.Deploys.Delete(req.FunctionName); derr != nil && !errors.Is(derr, deploy.ErrNotDeployed) {
			err = errors.Join(err, derr)
		}
	}
	p.logs.forget(req.FunctionName)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.log.Info("function removed", "function", req.FunctionName)
	w.WriteHeader(http.StatusAccepted)
}

// syncLocked makes the deployments agree with the deploy.Store (p.mu
// held): a function deployed at run time without the provider (mforch
// deploy) is added, one the Store no longer has (removed with mforch
// deploy --delete) is dropped, and a changed image is taken over.
func (p *Provider) syncLocked() {
	if p.cfg.Deploys == nil {
		return
	}
	recs := map[string]deploy.Record{}
	for _, rec := range p.cfg.Deploys.List() {
		recs[rec.Name] = rec
	}
	for name, fn := range p.fns {
		if _, ok := recs[name]; fn.target.Deployed && !ok {
			delete(p.fns, name)
		}
	}
	for name, rec := range recs {
		fn, ok := p.fns[name]
		if !ok || !fn.target.Deployed {
			fn = &function{Deployment: types.FunctionDeployment{Service: name, Namespace: Namespace}, Created: rec.Deployed}
			p.fns[name] = fn
		}
		fn.Deployment.Image = rec.Image
		fn.target = target{Function: name, User: !rec.Watchdog, Deployed: true, Watchdog: rec.Watchdog}
	}
}

// lookup returns a copy of a deployed function.
func (p *Provider) lookup(name string) (function, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.syncLocked()
	fn, ok := p.fns[name]
	if !ok {
		return function{}, false
	}
	return *fn, true
}

// stateFile is the state file's content.
type stateFile struct {
	Functions []*function    `json:"functions"`
	Secrets   []types.Secret `json:"secrets"`
}

// load reads the state file, if configured and present.
func (p *Provider) load() error {
	if p.cfg.StateFile == "" {
		return nil
	}
	b, err := os.ReadFile(p.cfg.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("openfaas state file: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("openfaas state file %s: %w", p.cfg.StateFile, err)
	}
	for _, s := range st.Secrets {
		p.secrets[s.Name] = s
	}
	for _, fn := range st.Functions {
		t, pull, err := p.resolveImage(fn.Deployment.Service, fn.Deployment.Image)
		switch {
		case pull:
			// The deploy.Store has its bundles (syncLocked drops it if
			// not, and sets whether it is a watchdog).
		case err != nil:
			// Keep it, so a changed configuration does not silently drop
			// deployments; its calls fail with the worker's error.
			p.log.Warn("deployed function can no longer run", "function", fn.Deployment.Service, "err", err)
			t = target{Function: strings.TrimPrefix(fn.Deployment.Image, ImagePrefix)}
		}
		fn.target = t
		p.fns[fn.Deployment.Service] = fn
	}
	p.syncLocked()
	p.log.Info("openfaas state loaded", "file", p.cfg.StateFile, "functions", len(p.fns), "secrets", len(p.secrets))
	return nil
}

// saveLocked shares the state with the other instances (Config.Shared)
// and writes the state file atomically (p.mu held).
func (p *Provider) saveLocked() error {
	if err := p.shareLocked(); err != nil {
		return err
	}
	if p.cfg.StateFile == "" {
		return nil
	}
	var st stateFile
	for _, fn := range p.fns {
		st.Functions = append(st.Functions, fn)
	}
	for _, s := range p.secrets {
		st.Secrets = append(st.Secrets, s)
	}
	slices.SortFunc(st.Functions, func(a, b *function) int { return strings.Compare(a.Deployment.Service, b.Deployment.Service) })
	slices.SortFunc(st.Secrets, func(a, b types.Secret) int { return strings.Compare(a.Name, b.Name) })
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("openfaas state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(p.cfg.StateFile), 0o755); err != nil {
		return fmt.Errorf("openfaas state file: %w", err)
	}
	tmp := p.cfg.StateFile + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("openfaas state file: %w", err)
	}
	if err := os.Rename(tmp, p.cfg.StateFile); err != nil {
		return fmt.Errorf("openfaas state file: %w", err)
	}
	return nil
}
