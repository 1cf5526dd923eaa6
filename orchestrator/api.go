package orchestrator

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/microfaas/microfaas/protocol"
)

// InvokeResponse is the JSON answer of POST /invoke/{function}.
type InvokeResponse struct {
	ID       string `json:"id"`
	Function string `json:"function"`
	Status   string `json:"status"` // queued, running or finished
	Restarts int    `json:"restarts,omitempty"`
	Worker   string `json:"worker"`
	// Instance is the mforch instance running it, when another instance
	// sharing the queue does (docs/scale-out.md).
	Instance string          `json:"instance,omitempty"`
	Attempts int             `json:"attempts"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	TimedOut bool            `json:"timed_out,omitempty"`
	ExecMS   float64         `json:"exec_ms"`
	BootMS   float64         `json:"boot_connected_ms"`
	TotalMS  float64         `json:"total_ms"`
	// HTTP is the answer of a function that serves HTTP (a watchdog image).
	HTTP *protocol.HTTPResponse `json:"http,omitempty"`
	// Log is the tail of the function's stderr for this call.
	Log string `json:"log,omitempty"`
	// WorkerLog links the log of the worker boot that ran it (its kernel
	// and mfinit lines, its console), when mforch keeps worker logs.
	WorkerLog *LogLink `json:"worker_log,omitempty"`
	// Energy is set once the invocation's energy is final (mforch with a
	// meter; docs/energy.md).
	Energy *InvocationEnergy `json:"energy,omitempty"`
}

// Handler serves the orchestrator's own HTTP API:
//
//	POST /invoke/{function}[?timeout=30s][&async=true]  body: the function's JSON arguments;
//	                                         header X-Invocation-Id: the caller's id (with a shared queue)
//	GET  /invocations/{id}                   an invocation's state and result
//	GET  /status                             workers and queue depth
//	GET  /workers/{id}/logs[?boot=N][&offset=B]  a worker boot's log (logsapi.go)
//	GET  /invocations/{id}/logs[?offset=B]   the log of the boot that ran an invocation
//	GET  /metrics                            Prometheus metrics
//	GET  /healthz
//
// A synchronous call answers with the result. An async call answers 202 with
// the invocation id once the invocation is accepted (persisted, when mforch
// runs with a store): poll /invocations/{id} for the result.
func (o *Orchestrator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /invoke/{function}", o.handleInvoke)
	mux.HandleFunc("GET /invocations/{id}", o.handleGet)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(o.FullStatus(r.Context()))
	})
	mux.HandleFunc("GET /workers/{id}/logs", o.handleWorkerLogs)
	mux.HandleFunc("GET /invocations/{id}/logs", o.handleInvocationLogs)
	mux.Handle("GET /metrics", o.metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	return mux
}

func (o *Orchestrator) handleInvoke(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		http.Error(w, fmt.Sprintf("request body larger than %d bytes", maxBody), http.StatusRequestEntityTooLarge)
		return
	}
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
	// X-Invocation-Id: the caller's id, so a retried call runs once (with --queue).
	spec := JobSpec{Function: r.PathValue("function"), Args: body, Timeout: timeout, ID: r.Header.Get("X-Invocation-Id")}
	if r.URL.Query().Get("async") == "true" {
		inv, err := o.SubmitJob(spec)
		if err != nil {
			refuse(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", "/invocations/"+inv.ID)
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(InvokeResponse{ID: inv.ID, Function: inv.Function, Status: "queued"})
		return
	}
	inv, err := o.InvokeJob(r.Context(), spec)
	if err != nil {
		refuse(w, err)
		return
	}
	writeInvocation(w, inv)
}

// maxBody bounds an invocation's arguments: a job travels in one protocol
// frame (protocol.MaxFrame, 16 MiB), and JSON escaping can double a body.
const maxBody = 8 << 20

// refuse answers an invocation that was not accepted: 429 when the queue is
// full and 503 while shutting down (both with Retry-After), 404 for an
// unknown function, 400 for a timeout beyond the cap.
func refuse(w http.ResponseWriter, err error) {
	status := HTTPStatus(err)
	if status == http.StatusInternalServerError {
		status = http.StatusServiceUnavailable
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter)
	}
	http.Error(w, err.Error(), status)
}

// retryAfter is the Retry-After (seconds) of a refused invocation.
const retryAfter = "5"

func (o *Orchestrator) handleGet(w http.ResponseWriter, r *http.Request) {
	inv, ok := o.Lookup(r.PathValue("id"))
	if !ok {
		http.Error(w, "no invocation "+r.PathValue("id"), http.StatusNotFound)
		return
	}
	// The scheduler updates live invocations under its lock.
	o.mu.Lock()
	resp, status := Response(inv), responseStatus(inv)
	resp.Energy = inv.energy
	o.mu.Unlock()
	writeResponse(w, resp, status)
}

// Response renders an invocation for the API.
func Response(inv *Invocation) InvokeResponse {
	resp := InvokeResponse{ID: inv.ID, Function: inv.Function, Worker: inv.Worker, Instance: inv.Instance, Attempts: inv.Attempts,
		Restarts: inv.Restarts, Result: inv.Result, Error: ErrText(inv.Err), TimedOut: inv.TimedOut, ExecMS: inv.ExecMS,
		BootMS: inv.Boot.ConnectedMS, HTTP: inv.HTTPResponse, Log: inv.Log, Status: "queued", WorkerLog: logLink(inv)}
	select {
	case <-inv.done:
		resp.Status = "finished"
		resp.TotalMS = float64(inv.Finished.Sub(inv.Queued).Microseconds()) / 1000
	default:
		if !inv.Started.IsZero() {
			resp.Status = "running"
		}
	}
	return resp
}

// writeInvocation answers with a finished invocation (its fields no longer
// change once done is closed).
func writeInvocation(w http.ResponseWriter, inv *Invocation) {
	writeResponse(w, Response(inv), responseStatus(inv))
}

// responseStatus is 202 while inv runs, then HTTPStatus of its outcome.
func responseStatus(inv *Invocation) int {
	select {
	case <-inv.done:
		return HTTPStatus(inv.Err)
	default:
		return http.StatusAccepted
	}
}

func writeResponse(w http.ResponseWriter, resp InvokeResponse, status int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(resp)
}
