package openfaas

import (
	"encoding/json"
	"errors"
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
// Shared by several mforch instances (Config.Shared with revisions), POST
// and PUT answer the secret's revision as an ETag; PUT and DELETE with it
// in If-Match apply only if nobody changed the secret since (409).
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
	match, err := ifMatch(r.Header.Get("If-Match"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
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
		status = http.StatusCreated
	case http.MethodPut:
		if !exists {
			http.Error(w, fmt.Sprintf("secret %s not found: create it with POST", s.Name), http.StatusNotFound)
			return
		}
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
	}
	// Shared by several instances: created only if no instance has it,
	// changed and removed only at the revision in If-Match (or the
	// current one), never brought back once removed.
	var value []byte
	if r.Method != http.MethodDelete {
		if value, err = json.Marshal(s); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	rev, err := p.casLocked("secret."+s.Name, value, r.Method == http.MethodPost, match)
	if errors.Is(err, ErrRemoved) && r.Method == http.MethodDelete {
		delete(p.shared, "secret."+s.Name)
		err = nil // by another instance; this one had not caught up
	}
	switch {
	case errors.Is(err, ErrConflict) && r.Method == http.MethodPost:
		http.Error(w, fmt.Sprintf("secret %s already exists (created through another mforch instance meanwhile): update it with PUT", s.Name), http.StatusConflict)
		return
	case errors.Is(err, ErrConflict):
		http.Error(w, fmt.Sprintf("secret %s was changed by another request since the ETag in If-Match (%v): make the change again over the current value, with the ETag of that write or without If-Match", s.Name, err), http.StatusConflict)
		return
	case errors.Is(err, ErrRemoved):
		http.Error(w, fmt.Sprintf("secret %s was removed by another request meanwhile: create it again with POST if it is still wanted", s.Name), http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, "sharing the secret with the other mforch instances failed (is NATS reachable?): "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if r.Method == http.MethodDelete {
		delete(p.secrets, s.Name)
	} else {
		p.secrets[s.Name] = s
	}
	if err := p.saveLocked(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.log.Info("secret changed", "secret", s.Name, "method", r.Method)
	etag(w, rev)
	w.WriteHeader(status)
}
