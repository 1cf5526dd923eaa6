package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/microfaas/microfaas/orchestrator/httpguard"
)

// Request is the body of PUT /functions/{name}.
type Request struct {
	Image string `json:"image"`
}

// Deployer is what the native routes deploy, remove and list through:
// the Store itself, or with mforch serve --queue the OpenFaaS provider's
// shared path (openfaas.Provider.Native), which shares every change with
// the other instances and pulls into the Store.
type Deployer interface {
	Deploy(ctx context.Context, name, image string, archs []string) (Record, error)
	Delete(name string) error
	Get(name string) (Record, bool)
	List() []Record
}

// Handler serves the native deploy routes on mforch's API, for use without
// an OpenFaaS gateway (mforch deploy); Handler(s, archs).
func (s *Store) Handler(archs []string) http.Handler { return Handler(s, archs) }

// Handler serves the native deploy routes of s:
//
//	PUT    /functions/{name}   {"image": REF} -> 200 Record (created or replaced)
//	GET    /functions          -> 200 []Record
//	GET    /functions/{name}   -> 200 Record; 404
//	DELETE /functions/{name}   -> 204; 404
//
// archs are the target names of the cluster's workers: every deployment is
// resolved for each. Errors answer with HTTPStatus and the error's text
// (shared: 409 for a change another instance made meanwhile, 503 with
// NATS away).
func Handler(s Deployer, archs []string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /functions/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := httpguard.CheckJSON(r); err != nil {
			http.Error(w, err.Error(), http.StatusUnsupportedMediaType)
			return
		}
		var req Request
		b, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err == nil {
			err = json.Unmarshal(b, &req)
		}
		if err != nil || req.Image == "" {
			http.Error(w, `want a JSON body {"image": "REGISTRY/REPOSITORY:TAG"}`, http.StatusBadRequest)
			return
		}
		rec, err := s.Deploy(r.Context(), r.PathValue("name"), req.Image, archs)
		if err != nil {
			http.Error(w, "cannot deploy: "+err.Error(), HTTPStatus(err))
			return
		}
		writeJSON(w, http.StatusOK, rec)
	})
	mux.HandleFunc("GET /functions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.List())
	})
	mux.HandleFunc("GET /functions/{name}", func(w http.ResponseWriter, r *http.Request) {
		rec, ok := s.Get(r.PathValue("name"))
		if !ok {
			http.Error(w, fmt.Sprintf("%s: %s", ErrNotDeployed, r.PathValue("name")), http.StatusNotFound)
			return
		}
		writeJSON(w, http.StatusOK, rec)
	})
	mux.HandleFunc("DELETE /functions/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Delete(r.PathValue("name")); err != nil {
			http.Error(w, err.Error(), HTTPStatus(err))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
