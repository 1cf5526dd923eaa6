package orchestrator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/microfaas/microfaas/orchestrator/workerlog"
)

// LogLink names the worker boot whose log belongs to an invocation.
type LogLink struct {
	Worker string `json:"worker"`
	Boot   int    `json:"boot"`
	Path   string `json:"path"` // the API path of that log
}

func logLink(inv *Invocation) *LogLink {
	if inv.LogBoot <= 0 || inv.Worker == "" {
		return nil
	}
	return &LogLink{Worker: inv.Worker, Boot: inv.LogBoot,
		Path: fmt.Sprintf("/workers/%s/logs?boot=%d", url.PathEscape(inv.Worker), inv.LogBoot)}
}

// handleWorkerLogs serves GET /workers/{id}/logs[?boot=N][&offset=B]: a
// workerlog.Chunk of boot N (default: the latest) from byte B. A client
// follows a boot by asking again from Next.
func (o *Orchestrator) handleWorkerLogs(w http.ResponseWriter, r *http.Request) {
	boot, ok := intParam(w, r, "boot")
	if !ok {
		return
	}
	o.serveLogs(w, r, r.PathValue("id"), boot)
}

// handleInvocationLogs serves GET /invocations/{id}/logs[?offset=B]: the
// log of the boot that ran the invocation.
func (o *Orchestrator) handleInvocationLogs(w http.ResponseWriter, r *http.Request) {
	inv, ok := o.Lookup(r.PathValue("id"))
	if !ok {
		http.Error(w, "no invocation "+r.PathValue("id"), http.StatusNotFound)
		return
	}
	o.mu.Lock()
	link := logLink(inv)
	o.mu.Unlock()
	if link == nil {
		http.Error(w, "invocation "+inv.ID+" has no worker log: it has not run yet, or mforch keeps no worker logs", http.StatusNotFound)
		return
	}
	o.serveLogs(w, r, link.Worker, link.Boot)
}

func (o *Orchestrator) serveLogs(w http.ResponseWriter, r *http.Request, worker string, boot int) {
	if o.cfg.WorkerLogs == nil {
		http.Error(w, "this mforch keeps no worker logs", http.StatusNotFound)
		return
	}
	offset, ok := intParam(w, r, "offset")
	if !ok {
		return
	}
	c, err := o.cfg.WorkerLogs.Read(worker, boot, int64(offset))
	switch {
	case errors.Is(err, workerlog.ErrBadWorker):
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case errors.Is(err, workerlog.ErrNoLogs):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(c)
}

// intParam reads a non-negative integer query parameter (absent: 0).
func intParam(w http.ResponseWriter, r *http.Request, name string) (int, bool) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, true
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		http.Error(w, name+": want a whole number, 0 or more", http.StatusBadRequest)
		return 0, false
	}
	return v, true
}
