package openfaas

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/openfaas/faas-provider/types"
)

// secretsHandler serves /system/secrets with types.Secret:
//
//	GET    list names (values are never returned)
//	POST   create (201; 409 if it exists)
//	PUT    replace the value (202; 404 if missing)
//	DELETE remove (202; 404 if missing; 409 while a function uses it)
//
// Secrets are stored (in the state file when there is one) and checked
// against deployments. They are not yet delivered to workers: the worker
// protocol's job has no field for them (see docs/openfaas.md).
func (p *Provider) secretsHandler(w http.ResponseWriter, r *http.Request) {
	if err := checkNamespace(r.URL.Query().Get("namespace")); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.Method == http.MethodGet {
		p.mu.Lock()
		out := make([]types.Secret, 0, len(p.secrets))
		for _, s := range p.secrets {
			out = append(out, types.Secret{Name: s.Name, Namespace: Namespace})
		}
		p.mu.Unlock()
		slices.SortFunc(out, func(a, b types.Secret) int { return strings.Compare(a.Name, b.Name) })
		writeJSON(w, http.StatusOK, out)
		return
	}
	var s types.Secret
	if err := readJSON(r, 1<<20, &s); err != nil {
		http.Error(w, err.Error(), readStatus(err))
		return
	}
	if !validName.MatchString(s.Name) {
		http.Error(w, fmt.Sprintf("secret name %q: use letters, digits, '-', '_' and '.'", s.Name), http.StatusBadRequest)
		return
	}
	if err := checkNamespace(s.Namespace); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.Namespace = Namespace
	p.mu.Lock()
	defer p.mu.Unlock()
	_, exists := p.secrets[s.Name]
	status := http.StatusAccepted
	switch r.Method {
	case http.MethodPost:
		if exists {
			http.Error(w, fmt.Sprintf("secret %s already exists: update it with PUT", s.Name), http.StatusConflict)
			return
		}
		p.secrets[s.Name] = s
		status = http.StatusCreated
	case http.MethodPut:
		if !exists {
			http.Error(w, fmt.Sprintf("secret %s not found", s.Name), http.StatusNotFound)
			return
		}
		p.secrets[s.Name] = s
	case http.MethodDelete:
		if !exists {
			http.Error(w, fmt.Sprintf("secret %s not found", s.Name), http.StatusNotFound)
			return
		}
		for _, fn := range p.fns {
			if slices.Contains(fn.Deployment.Secrets, s.Name) {
				http.Error(w, fmt.Sprintf("secret %s is used by function %s: remove it from the function first", s.Name, fn.Deployment.Service), http.StatusConflict)
				return
			}
		}
		delete(p.secrets, s.Name)
	}
	if err := p.saveLocked(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.log.Info("secret changed", "secret", s.Name, "method", r.Method)
	w.WriteHeader(status)
}
