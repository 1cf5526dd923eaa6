package orchestrator

import (
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// InvokeResponse is the JSON answer of POST /invoke/{function}.
type InvokeResponse struct {
	ID       string          `json:"id"`
	Function string          `json:"function"`
	Worker   string          `json:"worker"`
	Attempts int             `json:"attempts"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	TimedOut bool            `json:"timed_out,omitempty"`
	ExecMS   float64         `json:"exec_ms"`
	BootMS   float64         `json:"boot_connected_ms"`
	TotalMS  float64         `json:"total_ms"`
}

// Handler serves the orchestrator's own HTTP API:
//
//	POST /invoke/{function}[?timeout=30s]  body: the function's JSON arguments
//	GET  /status                            workers and queue depth
//	GET  /healthz
func (o *Orchestrator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /invoke/{function}", o.handleInvoke)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(o.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	return mux
}

func (o *Orchestrator) handleInvoke(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(body) == 0 {
		body = []byte("{}")
	}
	if !json.Valid(body) {
		http.Error(w, "the body must be the function's arguments as JSON", http.StatusBadRequest)
		return
	}
	var timeout time.Duration
	if t := r.URL.Query().Get("timeout"); t != "" {
		if timeout, err = time.ParseDuration(t); err != nil || timeout <= 0 {
			http.Error(w, "timeout: want a duration like 30s", http.StatusBadRequest)
			return
		}
	}
	inv, err := o.Invoke(r.Context(), r.PathValue("function"), body, timeout)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	resp := InvokeResponse{ID: inv.ID, Function: inv.Function, Worker: inv.Worker, Attempts: inv.Attempts,
		Result: inv.Result, Error: inv.Err, TimedOut: inv.TimedOut, ExecMS: inv.ExecMS,
		BootMS: inv.Boot.ConnectedMS, TotalMS: float64(inv.Finished.Sub(inv.Queued).Microseconds()) / 1000}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case inv.TimedOut:
		w.WriteHeader(http.StatusGatewayTimeout)
	case inv.Err != "":
		w.WriteHeader(http.StatusInternalServerError)
	}
	json.NewEncoder(w).Encode(resp)
}
