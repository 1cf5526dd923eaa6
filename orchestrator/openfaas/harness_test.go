package openfaas

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openfaas/faas-provider/auth"
	"github.com/openfaas/faas-provider/types"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/testlog"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/httpguard"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/simworker"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// harness is a running provider in front of a real orchestrator, served
// over real HTTP.
type harness struct {
	t     testing.TB
	orch  *orchestrator.Orchestrator
	p     *Provider
	srv   *httptest.Server
	creds *auth.BasicAuthCredentials // sent on /system/* when set
	logs  *testlog.Buffer
	// changed is closed on the next worker state change (nil while nobody
	// waits): tests wait on the orchestrator's events, not on sleeps.
	changedMu sync.Mutex
	changed   chan struct{}
}

// nextChange is closed on the next worker state change.
func (h *harness) nextChange() <-chan struct{} {
	h.changedMu.Lock()
	defer h.changedMu.Unlock()
	if h.changed == nil {
		h.changed = make(chan struct{})
	}
	return h.changed
}

func (h *harness) stateChanged() {
	h.changedMu.Lock()
	defer h.changedMu.Unlock()
	if h.changed != nil {
		close(h.changed)
		h.changed = nil
	}
}

// waitUntil checks cond now and after every worker state change, and fails
// the test if it does not hold within timeout.
func (h *harness) waitUntil(what string, timeout time.Duration, cond func() bool) {
	h.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		next := h.nextChange()
		if cond() {
			return
		}
		select {
		case <-next:
		case <-deadline.C:
			h.t.Fatalf("%s: not within %s: %+v", what, timeout, h.orch.Status())
		}
	}
}

// start runs the orchestrator over ctrl's workers and the provider in front
// of it; it registers the cleanup.
func start(t testing.TB, cl *cluster.Cluster, ln net.Listener, ctrl power.Controller, ocfg orchestrator.Config, pcfg Config) *harness {
	t.Helper()
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ocfg.Cluster = cl
	ocfg.Controllers = map[string]power.Controller{cluster.KindVM: ctrl}
	ocfg.Log = log
	h := &harness{t: t, creds: pcfg.Auth, logs: logs}
	onChange := ocfg.OnStateChange
	ocfg.OnStateChange = func(c state.Change) {
		if onChange != nil {
			onChange(c)
		}
		h.stateChanged()
	}
	o, err := orchestrator.New(ocfg)
	if err != nil {
		t.Fatal(err)
	}
	go o.Serve(ln)
	pcfg.Orchestrator = o
	pcfg.Log = log
	p, err := New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	// Behind the guard mforch serve puts in front of it, so the gateway
	// test shows the gateway and faas-cli pass its checks.
	guard := httpguard.Config{Open: append([]string{"/healthz"}, InvocationRoutes...), RawBody: InvocationRoutes, Log: log}
	if pcfg.Auth != nil {
		guard.User, guard.Password = pcfg.Auth.User, pcfg.Auth.Password
	}
	srv := httptest.NewServer(httpguard.Wrap(p.Handler(), guard))
	h.orch, h.p, h.srv = o, p, srv
	t.Cleanup(func() {
		srv.Close()
		o.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Error(err)
		}
		ln.Close()
		if t.Failed() {
			t.Logf("provider and orchestrator log:\n%s", logs.String())
		}
	})
	return h
}

// newSimHarness runs n in-process workers (the real worker runtime over
// loopback TCP, orchestrator/simworker).
func newSimHarness(t testing.TB, n int, bootDelay time.Duration, ocfg orchestrator.Config, pcfg Config) (*harness, *simworker.Controller) {
	t.Helper()
	cl := cluster.Local(n)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sim := &simworker.Controller{Orch: ln.Addr().String(), Secret: cl.SecretBytes(), BootDelay: bootDelay,
		SecretFor: map[string][]byte{}}
	// Cleanups run last-in first-out: the workers are waited for after
	// start's cleanup has closed the orchestrator, which powers them off.
	t.Cleanup(sim.Wait)
	return start(t, cl, ln, sim, ocfg, pcfg), sim
}

// call sends a request; body is nil, a string, []byte, or a value sent as
// JSON. hdr are header name/value pairs.
func (h *harness) call(method, path string, body any, hdr ...string) (*http.Response, []byte) {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, h.srv.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if h.creds != nil && strings.HasPrefix(path, "/system/") && req.Header.Get("Authorization") == "" {
		req.SetBasicAuth(h.creds.User, h.creds.Password)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return res, b
}

// status reads /system/function/{name}.
func (h *harness) status(name string) (st types.FunctionStatus) {
	h.t.Helper()
	res, b := h.call("GET", "/system/function/"+name, nil)
	if res.StatusCode != http.StatusOK {
		h.t.Fatalf("status of %s: %d %s", name, res.StatusCode, b)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		h.t.Fatalf("status of %s: %v: %s", name, err, b)
	}
	return st
}

// waitAllOff waits until every worker is off, so the next call is cold.
func (h *harness) waitAllOff(timeout time.Duration) {
	h.t.Helper()
	h.waitUntil("every worker off", timeout, func() bool {
		for _, w := range h.orch.Status().Workers {
			if w.State != state.Off {
				return false
			}
		}
		return true
	})
}
