package openfaas

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"github.com/openfaas/faas-provider/types"

	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/protocol"
)

// Response headers besides OpenFaaS's own (X-Call-Id, X-Start-Time,
// X-Duration-Seconds): where and how the call ran.
const (
	HeaderInvocation = "X-Microfaas-Invocation-Id"
	HeaderWorker     = "X-Microfaas-Worker"
	HeaderExecMS     = "X-Microfaas-Exec-Ms"
	HeaderAttempts   = "X-Microfaas-Attempts"
)

// errBadBody is a request body the function cannot be given.
var errBadBody = errors.New("bad request body")

// args turns an HTTP body into the job's f_args.
//
// Built-ins take a JSON object: a JSON body goes as it is, an empty one as
// {}, anything else as a JSON string (the function then says what it
// wanted). Stdin/stdout functions (user functions of the worker image,
// deployed images that are not watchdogs) read the body on stdin: the body
// always goes as a JSON string, which the worker writes to stdin byte for
// byte. Passing JSON bodies "as is" would not be byte-exact for them, since
// the protocol's JSON encoder compacts the arguments and escapes <, > and &.
// A JSON string must be UTF-8, so a binary body is refused rather than
// silently altered. (Watchdog images get the body as bytes: httpRequest.)
func (t target) args(body []byte) (json.RawMessage, error) {
	if t.User {
		if !utf8.Valid(body) {
			return nil, fmt.Errorf("%w: stdin/stdout functions take text bodies (UTF-8); an OpenFaaS watchdog image takes any bytes", errBadBody)
		}
		return json.Marshal(string(body))
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return json.RawMessage(`{}`), nil
	}
	if json.Valid(body) {
		return json.RawMessage(body), nil
	}
	return json.Marshal(string(body))
}

// hopByHop are the headers of one connection, not of the message: not
// forwarded either way (RFC 9110 7.6.1), as Go's reverse proxy does.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// forwardHeader copies h without hop-by-hop headers, the headers the
// Connection header names, and names that are not HTTP tokens (a worker's
// answer is untrusted).
func forwardHeader(h map[string][]string) map[string][]string {
	out := map[string][]string{}
	drop := map[string]bool{}
	for _, n := range hopByHop {
		drop[n] = true
	}
	for _, v := range h["Connection"] {
		for _, n := range strings.Split(v, ",") {
			drop[http.CanonicalHeaderKey(strings.TrimSpace(n))] = true
		}
	}
	for k, v := range h {
		k = http.CanonicalHeaderKey(k)
		if drop[k] || !validHeaderName(k) {
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	return out
}

// validHeaderName: a non-empty HTTP token (RFC 9110 5.6.2).
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range []byte(k) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// httpRequest is the call forwarded to a watchdog function: the method, the
// path below /function/NAME ("/" when none), the raw query, the headers
// (without hop-by-hop ones) and the body bytes.
func httpRequest(r *http.Request, name string, body []byte) *protocol.HTTPRequest {
	path := r.URL.EscapedPath()
	for _, prefix := range InvocationRoutes {
		if rest, ok := strings.CutPrefix(path, prefix+name); ok {
			path = rest
			break
		}
	}
	if path == "" {
		path = "/"
	}
	return &protocol.HTTPRequest{Method: r.Method, Path: path, Query: r.URL.RawQuery,
		Header: forwardHeader(r.Header), Body: body}
}

// jobSpec is what an invocation of fn carries: the deployment's envVars
// (and envProcess as fprocess, the watchdog's name for it) in the
// function's environment, and its secrets' values for the worker to write
// to /var/openfaas/secrets, as OpenFaaS mounts them.
func (p *Provider) jobSpec(fn function, args json.RawMessage, req *protocol.HTTPRequest, timeout time.Duration) orchestrator.JobSpec {
	spec := orchestrator.JobSpec{Function: fn.target.Function, Args: args, HTTP: req, Timeout: timeout}
	d := fn.Deployment
	if len(d.EnvVars) > 0 || d.EnvProcess != "" {
		spec.Env = map[string]string{}
		for k, v := range d.EnvVars {
			spec.Env[k] = v
		}
		if d.EnvProcess != "" {
			spec.Env["fprocess"] = d.EnvProcess
		}
	}
	if len(d.Secrets) > 0 {
		p.mu.Lock()
		spec.Secrets = map[string][]byte{}
		for _, name := range d.Secrets {
			if s, ok := p.secrets[name]; ok {
				v := s.RawValue
				if len(v) == 0 {
					v = []byte(s.Value)
				}
				spec.Secrets[name] = v
			}
		}
		p.mu.Unlock()
	}
	return spec
}

// reply is an invocation's outcome as HTTP.
type reply struct {
	status      int
	contentType string
	body        []byte
	// header, for a watchdog function's response, are its headers (its
	// Content-Type among them, if it sent one), sent unchanged.
	header map[string][]string
}

// render maps a finished invocation to a reply: the result as the body,
// function errors 500, timeouts 504, and calls that never reached a worker
// 503. A result that is a JSON string (what user functions and many
// built-ins return) is sent decoded, as text/plain; any other result is sent
// as JSON. The deployment's content_type environment variable (the
// watchdog's convention) overrides the content type of results.
func (fn *function) render(inv *orchestrator.Invocation, queueTimedOut bool) reply {
	if inv.Err != nil {
		status, msg := orchestrator.HTTPStatus(inv.Err), inv.Err.Error()
		if status == http.StatusServiceUnavailable && queueTimedOut {
			msg = fmt.Sprintf("no worker was free to run %s in time (%s)", fn.Deployment.Service, inv.Err)
		}
		return reply{status: status, contentType: "text/plain", body: []byte(msg)}
	}
	if res := inv.HTTPResponse; res != nil {
		if res.Status < 100 || res.Status > 599 {
			return reply{status: http.StatusBadGateway, contentType: "text/plain",
				body: []byte(fmt.Sprintf("%s: the function answered HTTP status %d", fn.Deployment.Service, res.Status))}
		}
		return reply{status: res.Status, body: res.Body, header: forwardHeader(res.Header)}
	}
	var s string
	rep := reply{status: http.StatusOK, contentType: "application/json", body: inv.Result}
	if json.Unmarshal(inv.Result, &s) == nil {
		rep.contentType, rep.body = "text/plain", []byte(s)
	}
	if ct := fn.Deployment.EnvVars["content_type"]; ct != "" {
		rep.contentType = ct
	}
	return rep
}

// noWorker says why no worker can run anything, or "" if one can.
func (p *Provider) noWorker() string {
	st := p.cfg.Orchestrator.Status()
	for _, w := range st.Workers {
		if w.State != state.Failed {
			return ""
		}
	}
	return fmt.Sprintf("no worker can run functions: all %d workers failed to boot (see mforch's log and the worker consoles)", len(st.Workers))
}

// callID returns the request's X-Call-Id (set by the gateway), or a new
// one for a direct call, and the start time OpenFaaS reports.
func callID(r *http.Request) (id string, fresh bool) {
	if id := r.Header.Get("X-Call-Id"); id != "" {
		return id, false
	}
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40 // a version-4 UUID, like the gateway's
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], true
}

// prepare reads what both invocation paths need: the function, the call
// id and the job: the body as the job's arguments, or, for a watchdog
// function, the whole request. It answers the request itself on error.
func (p *Provider) prepare(w http.ResponseWriter, r *http.Request) (fn function, id string, spec orchestrator.JobSpec, ok bool) {
	name := mux.Vars(r)["name"]
	fn, found := p.lookup(name)
	if !found {
		http.Error(w, fmt.Sprintf("function %s not found: deploy it first", name), http.StatusNotFound)
		return fn, "", spec, false
	}
	id, fresh := callID(r)
	if fresh {
		w.Header().Set("X-Call-Id", id)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, p.cfg.MaxBody+1))
	if err != nil {
		http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
		return fn, "", spec, false
	}
	if int64(len(body)) > p.cfg.MaxBody {
		http.Error(w, fmt.Sprintf("request body larger than %d bytes", p.cfg.MaxBody), http.StatusRequestEntityTooLarge)
		return fn, "", spec, false
	}
	var args json.RawMessage
	var req *protocol.HTTPRequest
	if fn.target.Watchdog {
		req = httpRequest(r, name, body)
	} else if args, err = fn.target.args(body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return fn, "", spec, false
	}
	// With a shared queue another instance's workers may run it.
	if why := p.noWorker(); why != "" && p.cfg.Shared == nil {
		http.Error(w, why, http.StatusServiceUnavailable)
		return fn, "", spec, false
	}
	timeout, _ := execTimeout(fn.Deployment.EnvVars) // checked at deploy
	return fn, id, p.jobSpec(fn, args, req, timeout), true
}

// proxy: /function/{name}[/{params}] with any method the faas-provider
// proxy allows. The body goes to the function and its output comes back;
// a watchdog function gets the whole request (method, path below the
// function, query, headers, body) and its response comes back unchanged.
// Other functions get only the body (docs/openfaas.md).
func (p *Provider) proxy(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
		http.MethodGet, http.MethodOptions, http.MethodHead:
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get("X-Start-Time") == "" {
		w.Header().Set("X-Start-Time", strconv.FormatInt(start.UTC().UnixNano(), 10))
	}
	fn, id, spec, ok := p.prepare(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.QueueTimeout)
	defer cancel()
	inv, err := p.cfg.Orchestrator.InvokeJob(ctx, spec)
	if err != nil {
		refuse(w, fn.Deployment.Service, err)
		return
	}
	queueTimedOut := errors.Is(ctx.Err(), context.DeadlineExceeded) && r.Context().Err() == nil
	rep := fn.render(inv, queueTimedOut)
	p.finished(fn.Deployment.Service, id, inv, rep.status, time.Since(start))
	setRunHeaders(w.Header(), inv, time.Since(start))
	rep.writeHeader(w.Header())
	w.WriteHeader(rep.status)
	w.Write(rep.body)
}

// writeHeader sets the reply's headers on h: a watchdog function's own
// (over the run headers, which it may set itself, X-Duration-Seconds
// included, except mforch's own: mforchHeader), else the content type.
func (rep reply) writeHeader(h http.Header) {
	if rep.header == nil {
		h.Set("Content-Type", rep.contentType)
		return
	}
	if _, ok := rep.header["Content-Type"]; !ok {
		h["Content-Type"] = nil // as the function sent it: none, not one sniffed
	}
	for k, v := range rep.header {
		k = textproto.CanonicalMIMEHeaderKey(k)
		if k == "Content-Length" || mforchHeader(k) {
			continue // the body's own length is sent; mforch's are mforch's
		}
		h[k] = v
	}
}

// mforchHeader reports whether canonical header name k is one mforch sets
// about the call (X-Call-Id, X-Microfaas-*): a function's answer may not
// replace them, so a caller can trust where and how its call ran.
func mforchHeader(k string) bool {
	return k == "X-Call-Id" || strings.HasPrefix(k, "X-Microfaas-")
}

// refuse answers a call the orchestrator did not accept: 429 (queue full)
// or 503 with Retry-After, 404 for a function no image holds.
func refuse(w http.ResponseWriter, name string, err error) {
	status := orchestrator.HTTPStatus(err)
	if status != http.StatusTooManyRequests && status != http.StatusNotFound && status != http.StatusBadRequest {
		status = http.StatusServiceUnavailable
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	http.Error(w, fmt.Sprintf("cannot queue %s: %v", name, err), status)
}

func setRunHeaders(h http.Header, inv *orchestrator.Invocation, d time.Duration) {
	// The watchdog's X-Duration-Seconds is the time it spent on the call;
	// here that includes waiting for a worker and booting it.
	h.Set("X-Duration-Seconds", fmt.Sprintf("%f", d.Seconds()))
	h.Set(HeaderInvocation, inv.ID)
	if inv.Worker != "" {
		h.Set(HeaderWorker, inv.Worker)
		h.Set(HeaderExecMS, fmt.Sprintf("%.3f", inv.ExecMS))
	}
	h.Set(HeaderAttempts, strconv.Itoa(inv.Attempts))
}

// asyncProxy: POST /async-function/{name}[/{params}]. mforch queues the call,
// answers 202 with X-Call-Id at once, and when it has run posts the result
// to X-Callback-Url if given, with the headers OpenFaaS's queue-worker sets
// (X-Call-Id, X-Function-Status, X-Function-Name, X-Duration-Seconds).
func (p *Provider) asyncProxy(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var callback *url.URL
	if cb := r.Header.Get("X-Callback-Url"); cb != "" {
		u, err := url.Parse(cb)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			http.Error(w, fmt.Sprintf("X-Callback-Url %q: want an absolute http(s) URL", cb), http.StatusBadRequest)
			return
		}
		if !callbackAllowed(p.cfg.CallbackAllow, u.Hostname()) {
			http.Error(w, fmt.Sprintf("X-Callback-Url %q: host %s is not in mforch's callback allow-list (--openfaas-callback-allow)", cb, u.Hostname()), http.StatusBadRequest)
			return
		}
		callback = u
	}
	fn, id, spec, ok := p.prepare(w, r)
	if !ok {
		return
	}
	if callback != nil && p.relay != nil {
		// With a shared queue the callback goes with the invocation: the
		// instance that finishes it sends it, even if this one is gone.
		spec.Callback, _ = json.Marshal(relayedCallback{URL: callback.String(), Function: fn.Deployment.Service,
			CallID: id, ContentType: fn.Deployment.EnvVars["content_type"], Start: start})
		callback = nil
	}
	inv, err := p.cfg.Orchestrator.SubmitJob(spec)
	if err != nil {
		refuse(w, fn.Deployment.Service, err)
		return
	}
	w.Header().Set(HeaderInvocation, inv.ID)
	w.WriteHeader(http.StatusAccepted)
	p.async.Add(1)
	go func() {
		defer p.async.Done()
		<-inv.Done()
		rep := fn.render(inv, false)
		d := time.Since(start)
		p.finished(fn.Deployment.Service, id, inv, rep.status, d)
		if callback != nil {
			p.postCallback(callback, fn.Deployment.Service, id, inv, rep, d)
		}
	}()
}

// relayedCallback is what another instance needs to send an async call's
// callback (orchestrator.JobSpec.Callback, sealed in the shared queue).
type relayedCallback struct {
	URL         string    `json:"url"`
	Function    string    `json:"function"`
	CallID      string    `json:"call_id"`
	ContentType string    `json:"content_type,omitempty"` // the deployment's content_type, as at the call
	Start       time.Time `json:"start"`
}

// relayedCallback sends a callback this instance claimed (CallbackRelay),
// whichever instance the call came to; this instance's allow-list holds
// too. It does not block.
func (p *Provider) relayedCallback(b []byte, res *orchestrator.Invocation) {
	var cb relayedCallback
	if err := json.Unmarshal(b, &cb); err != nil {
		p.log.Error("async callback: does not decode; not sent", "invocation", res.ID, "err", err)
		return
	}
	u, err := url.Parse(cb.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.log.Error("async callback: bad URL; not sent", "invocation", res.ID, "function", cb.Function, "err", err)
		return
	}
	if !callbackAllowed(p.cfg.CallbackAllow, u.Hostname()) {
		p.log.Warn("async callback: host not in this instance's allow-list (--openfaas-callback-allow); not sent",
			"function", cb.Function, "call_id", cb.CallID, "url", u.Redacted())
		return
	}
	fn := function{Deployment: types.FunctionDeployment{Service: cb.Function}}
	if cb.ContentType != "" {
		fn.Deployment.EnvVars = map[string]string{"content_type": cb.ContentType}
	}
	rep := fn.render(res, false)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.relayClosed {
		p.log.Warn("async callback: claimed while the provider closed; not sent", "function", cb.Function, "call_id", cb.CallID)
		return
	}
	p.async.Add(1)
	go func() {
		defer p.async.Done()
		p.postCallback(u, cb.Function, cb.CallID, res, rep, max(time.Since(cb.Start), 0))
	}()
}

// errCallbackRefused: a callback, or a redirect it was answered with,
// would reach a host or address outside the callback allow-list.
var errCallbackRefused = errors.New("callback refused by the allow-list (--openfaas-callback-allow)")

// callbackTimeout bounds one callback, redirects included.
const callbackTimeout = 30 * time.Second

// callbackAllowed reports whether host may receive callbacks: any, when
// allow is empty; else an exact name or address, or an address inside a
// listed prefix.
func callbackAllowed(allow []string, host string) bool {
	if len(allow) == 0 || nameListed(allow, host) {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && addrAllowed(allow, ip)
}

func nameListed(allow []string, host string) bool {
	for _, a := range allow {
		if strings.EqualFold(a, host) {
			return true
		}
	}
	return false
}

// addrAllowed reports whether ip is a listed address or inside a listed
// prefix.
func addrAllowed(allow []string, ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, a := range allow {
		if pfx, err := netip.ParsePrefix(a); err == nil && pfx.Contains(ip) {
			return true
		}
		if addr, err := netip.ParseAddr(a); err == nil && addr.Unmap() == ip {
			return true
		}
	}
	return false
}

// callbackClient posts callbacks. The allow-list is checked on the
// callback URL at submit, and here on every redirect (CheckRedirect) and on
// every address a connection is made to (the dialer's Control, after name
// resolution): a listed host cannot send the output on with a 307, and a
// name cannot be rebound to an address outside the list. A listed name may
// resolve to any address: the operator chose it. No proxy from the
// environment is used, so the address checked is the one connected to.
func callbackClient(allow []string, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		d := *dialer
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: unexpected address %q", errCallbackRefused, address)
			}
			if len(allow) == 0 || addrAllowed(allow, ap.Addr()) || nameListed(allow, host) {
				return nil
			}
			return fmt.Errorf("%w: %s is at %s", errCallbackRefused, host, ap.Addr())
		}
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{Proxy: nil, DialContext: dial, ForceAttemptHTTP2: true,
			TLSHandshakeTimeout: 10 * time.Second, MaxIdleConns: 10, IdleConnTimeout: 90 * time.Second},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("callback: stopped after 10 redirects")
			}
			if (req.URL.Scheme != "http" && req.URL.Scheme != "https") || !callbackAllowed(allow, req.URL.Hostname()) {
				return fmt.Errorf("%w: redirected to %s", errCallbackRefused, req.URL.Redacted())
			}
			return nil
		},
	}
}

func (p *Provider) postCallback(u *url.URL, name, id string, inv *orchestrator.Invocation, rep reply, d time.Duration) {
	req, err := http.NewRequest(http.MethodPost, u.String(), bytes.NewReader(rep.body))
	if err != nil {
		p.log.Warn("async callback", "function", name, "call_id", id, "err", err)
		return
	}
	rep.writeHeader(req.Header)
	req.Header.Set("X-Call-Id", id)
	req.Header.Set("X-Function-Status", strconv.Itoa(rep.status))
	req.Header.Set("X-Function-Name", name)
	setRunHeaders(req.Header, inv, d)
	res, err := p.callbacks.Do(req)
	if err != nil {
		// Go's client errors show URLs without their passwords.
		p.log.Warn("async callback failed", "function", name, "call_id", id, "url", u.Redacted(), "err", err)
		return
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	p.log.Info("async callback posted", "function", name, "call_id", id, "url", u.Redacted(), "status", res.StatusCode)
}

// finished counts a call and adds it to the function's log: a line for
// the call, then the function's own log lines (its stderr, or its
// watchdog's log, as the worker sent them).
func (p *Provider) finished(name, id string, inv *orchestrator.Invocation, status int, d time.Duration) {
	p.mu.Lock()
	if fn, ok := p.fns[name]; ok {
		fn.Invocations++
	}
	p.mu.Unlock()
	p.logs.add(name, inv.Worker, inv.Finished, logText(id, inv, status, d))
	for _, line := range logLines(inv.Log) {
		p.logs.add(name, inv.Worker, inv.Finished, line)
	}
}
