package openfaas

import (
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
)

// Images a worker can run.
const (
	// ImagePrefix + NAME is the built-in function NAME.
	ImagePrefix = "microfaas/"
	// UserImage + ":" + NAME is the user function NAME (/functions/NAME in
	// the worker initramfs). The tag names the function because the image,
	// the worker's initramfs, is the same for all of them.
	UserImage = "microfaas/fn"
)

// target is what a deployment runs on a worker.
type target struct {
	Function string // the job's f_id
	User     bool   // a stdin/stdout user function, not a built-in
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

// resolveImage maps a deployment's image to what a worker runs, or says
// why it cannot run.
func (p *Provider) resolveImage(image string) (target, error) {
	hint := fmt.Sprintf("use %sNAME for a built-in (%s) or %s:NAME for a user function in the worker image (%s)",
		ImagePrefix, strings.Join(p.cfg.Builtins, ", "), UserImage, userList(p.cfg.UserFunctions))
	if strings.HasPrefix(image, UserImage+":") {
		name := strings.TrimPrefix(image, UserImage+":")
		if slices.Contains(p.cfg.UserFunctions, name) {
			return target{Function: name, User: true}, nil
		}
		return target{}, fmt.Errorf("image %q: no user function %q in this cluster's worker image (%s); "+
			"build it in with mfbuild worker --function %s=PATH and list it in mforch serve --openfaas-functions",
			image, name, userList(p.cfg.UserFunctions), name)
	}
	rest, ok := strings.CutPrefix(image, ImagePrefix)
	if !ok {
		return target{}, fmt.Errorf("image %q cannot run on MicroFaaS workers, which run no containers: %s", image, hint)
	}
	// A :latest tag means the same image; any other tag would promise a
	// version we cannot select.
	name, tag, tagged := strings.Cut(rest, ":")
	if tagged && tag != "latest" {
		return target{}, fmt.Errorf("image %q: built-in functions have no versions, only the one in the worker image (drop the tag or use :latest)", image)
	}
	if slices.Contains(p.cfg.Builtins, name) {
		return target{Function: name}, nil
	}
	return target{}, fmt.Errorf("image %q: no built-in function %q: %s", image, name, hint)
}

func userList(names []string) string {
	if len(names) == 0 {
		return "none configured"
	}
	return strings.Join(names, ", ")
}

// checkDeployment validates a deployment and resolves its image. Called
// with p.mu held (it reads the secrets).
func (p *Provider) checkDeploymentLocked(d *types.FunctionDeployment) (target, error) {
	if d.Service == "" {
		return target{}, errors.New("service (the function name) is missing")
	}
	if !validName.MatchString(d.Service) {
		return target{}, fmt.Errorf("service %q: a function name has letters, digits, '-', '_' and '.'", d.Service)
	}
	if err := checkNamespace(d.Namespace); err != nil {
		return target{}, err
	}
	if _, err := execTimeout(d.EnvVars); err != nil {
		return target{}, err
	}
	for _, s := range d.Secrets {
		if _, ok := p.secrets[s]; !ok {
			return target{}, fmt.Errorf("secret %q not found: create it first (faas-cli secret create %s)", s, s)
		}
	}
	return p.resolveImage(d.Image)
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

// deployFunction: POST /system/functions with types.FunctionDeployment.
func (p *Provider) deployFunction(w http.ResponseWriter, r *http.Request) {
	var d types.FunctionDeployment
	if err := readJSON(r, 1<<20, &d); err != nil {
		http.Error(w, err.Error(), readStatus(err))
		return
	}
	p.mu.Lock()
	t, err := p.checkDeploymentLocked(&d)
	if err != nil {
		p.mu.Unlock()
		http.Error(w, "cannot deploy: "+err.Error(), http.StatusBadRequest)
		return
	}
	if _, exists := p.fns[d.Service]; exists {
		p.mu.Unlock()
		http.Error(w, fmt.Sprintf("function %s already exists: update it with PUT /system/functions", d.Service), http.StatusConflict)
		return
	}
	d.Namespace = Namespace
	p.fns[d.Service] = &function{Deployment: d, Created: time.Now().UTC(), target: t}
	err = p.saveLocked()
	p.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.log.Info("function deployed", "function", d.Service, "image", d.Image, "runs", t.Function, "user", t.User)
	w.WriteHeader(http.StatusAccepted)
}

// updateFunction: PUT /system/functions with types.FunctionDeployment; 404
// for a function that is not deployed. Creation time and invocation count
// carry over.
func (p *Provider) updateFunction(w http.ResponseWriter, r *http.Request) {
	var d types.FunctionDeployment
	if err := readJSON(r, 1<<20, &d); err != nil {
		http.Error(w, err.Error(), readStatus(err))
		return
	}
	p.mu.Lock()
	fn, exists := p.fns[d.Service]
	if !exists {
		p.mu.Unlock()
		http.Error(w, fmt.Sprintf("function %s not found", d.Service), http.StatusNotFound)
		return
	}
	t, err := p.checkDeploymentLocked(&d)
	if err != nil {
		p.mu.Unlock()
		http.Error(w, "cannot update: "+err.Error(), http.StatusBadRequest)
		return
	}
	d.Namespace = Namespace
	fn.Deployment, fn.target = d, t
	err = p.saveLocked()
	p.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.log.Info("function updated", "function", d.Service, "image", d.Image)
	w.WriteHeader(http.StatusAccepted)
}

// deleteFunction: DELETE /system/functions with types.DeleteFunctionRequest.
func (p *Provider) deleteFunction(w http.ResponseWriter, r *http.Request) {
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
	if _, ok := p.fns[req.FunctionName]; !ok {
		p.mu.Unlock()
		http.Error(w, fmt.Sprintf("function %s not found", req.FunctionName), http.StatusNotFound)
		return
	}
	delete(p.fns, req.FunctionName)
	delete(p.wanted, req.FunctionName)
	err := p.saveLocked()
	p.mu.Unlock()
	p.logs.forget(req.FunctionName)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.log.Info("function removed", "function", req.FunctionName)
	w.WriteHeader(http.StatusAccepted)
}

// lookup returns a copy of a deployed function.
func (p *Provider) lookup(name string) (function, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
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
		t, err := p.resolveImage(fn.Deployment.Image)
		if err != nil {
			// Keep it, so a changed --openfaas-functions does not silently
			// drop deployments; its calls fail with the worker's error.
			p.log.Warn("deployed function can no longer run", "function", fn.Deployment.Service, "err", err)
			t = target{Function: strings.TrimPrefix(fn.Deployment.Image, ImagePrefix)}
		}
		fn.target = t
		p.fns[fn.Deployment.Service] = fn
	}
	p.log.Info("openfaas state loaded", "file", p.cfg.StateFile, "functions", len(p.fns), "secrets", len(p.secrets))
	return nil
}

// saveLocked writes the state file atomically (p.mu held).
func (p *Provider) saveLocked() error {
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
