package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/runtime/functions"
)

// errSession means the session itself failed during a job (the connection
// cut or the orchestrator out of step while a bundle was fetched): no
// result can be sent; the worker ends the session.
var errSession = errors.New("session with the orchestrator failed")

// keptWatchdog is a watchdog function left running for its next call.
type keptWatchdog struct {
	key string // watchdogKey of the jobs it serves
	wd  *functions.Watchdog
}

// watchdogKey says which calls may share a running watchdog: those of one
// function, one bundle, one environment and one set of secrets (the
// watchdog got them when it started).
func watchdogKey(job protocol.Job) string {
	if job.Bundle == nil {
		return ""
	}
	h := sha256.New()
	put := func(s string) { fmt.Fprintf(h, "%d:%s", len(s), s) }
	put(job.Function)
	put(job.Bundle.Digest)
	for _, m := range []map[string]string{job.Env, secretSums(job.Secrets)} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		put(fmt.Sprint(len(keys)))
		for _, k := range keys {
			put(k)
			put(m[k])
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func secretSums(s map[string][]byte) map[string]string {
	m := make(map[string]string, len(s))
	for k, v := range s {
		sum := sha256.Sum256(v)
		m[k] = hex.EncodeToString(sum[:])
	}
	return m
}

// stopWatchdog stops the kept watchdog, if any.
func (w *Worker) stopWatchdog() {
	if w.watchdog != nil {
		w.watchdog.wd.Stop()
		w.watchdog = nil
	}
}

// callWatchdog runs one call of a watchdog function unpacked in dir: the
// job's HTTP request goes to its watchdog (started now, or kept from the
// same function's last call) and its response comes back unchanged. A job
// with no HTTP request (a stdin-style caller) is a POST of its arguments,
// answered with the body as the result when the status is 2xx.
func (w *Worker) callWatchdog(ctx context.Context, job protocol.Job, dir string, env functions.Env, timeout time.Duration) protocol.Result {
	res := protocol.Result{ID: job.ID, Function: job.Function}
	if w.watchdog != nil && w.watchdog.wd.Exited() {
		w.stopWatchdog()
	}
	if w.watchdog == nil {
		wd, err := functions.StartWatchdog(job.Function, dir, env)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		w.watchdog = &keptWatchdog{key: watchdogKey(job), wd: wd}
	}
	req := job.HTTP
	if req == nil {
		req = &protocol.HTTPRequest{Method: http.MethodPost, Path: "/", Body: stdinBody(job.Args)}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	resp, log, err := w.watchdog.wd.Call(ctx, req)
	res.ExecMS = float64(time.Since(start).Microseconds()) / 1000
	res.Log = log
	if err != nil {
		w.stopWatchdog() // a watchdog that failed a call is not trusted with the next
		res.Error = err.Error()
		res.TimedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
		return res
	}
	if job.HTTP != nil {
		res.HTTP = resp
		return res
	}
	if resp.Status/100 != 2 {
		body := resp.Body
		if len(body) > 2048 {
			body = body[:2048]
		}
		res.Error = fmt.Sprintf("%s: its watchdog answered %d %s: %s", job.Function, resp.Status, http.StatusText(resp.Status), body)
		return res
	}
	res.Result, _ = json.Marshal(string(resp.Body))
	return res
}

// stdinBody is what a stdin-style call sends: a JSON string's contents,
// else the JSON itself (as user functions read it).
func stdinBody(args json.RawMessage) []byte {
	var s string
	if len(args) > 0 && args[0] == '"' && json.Unmarshal(args, &s) == nil {
		return []byte(s)
	}
	return args
}

// bundles is the worker's Bundles (a default one if none was given).
func (w *Worker) bundles() *Bundles {
	if w.Bundles == nil {
		w.Bundles = &Bundles{Log: w.Log}
	}
	return w.Bundles
}
