package natsq

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/openfaas"
)

// callbacks is a callback receiver on loopback that counts arrivals.
type callbacks struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []arrival
	ch  chan struct{}
}

type arrival struct {
	callID, status, name, body string
}

func newCallbacks(t *testing.T) *callbacks {
	c := &callbacks{ch: make(chan struct{}, 16)}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.got = append(c.got, arrival{r.Header.Get("X-Call-Id"), r.Header.Get("X-Function-Status"), r.Header.Get("X-Function-Name"), string(b)})
		c.mu.Unlock()
		c.ch <- struct{}{}
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *callbacks) arrivals() []arrival {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]arrival(nil), c.got...)
}

// wait waits (bounded) for the first arrival, then d more for any other.
func (c *callbacks) wait(t *testing.T, within, d time.Duration) []arrival {
	t.Helper()
	select {
	case <-c.ch:
	case <-time.After(within):
		t.Fatalf("no callback within %s", within)
	}
	time.Sleep(d)
	return c.arrivals()
}

// provider starts the OpenFaaS provider of in, sharing state (and its
// callbacks) through in's queue, callbacks allowed to loopback only.
func provider(t *testing.T, in *instance) *openfaas.Provider {
	t.Helper()
	st, err := in.q.State(context.Background(), "microfaas_openfaas")
	if err != nil {
		t.Fatal(err)
	}
	p, err := openfaas.New(openfaas.Config{Orchestrator: in.orch, Shared: st, CallbackAllow: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p
}

// submitAsync deploys nap through h (waiting until other lists it) and
// makes an async call of k, napping ms, with callback url; it returns the
// call id and the invocation id.
func submitAsync(t *testing.T, h, other http.Handler, k string, ms int, url string) (string, string) {
	t.Helper()
	if code, body := call(h, "POST", "/system/functions", `{"service":"nap","image":"microfaas/test_nap"}`); code != http.StatusAccepted {
		t.Fatalf("deploy: %d %s", code, body)
	}
	if other != nil {
		eventually(t, "the other instance lists nap", func() bool {
			_, body := call(other, "GET", "/system/functions", "")
			return strings.Contains(body, `"name":"nap"`)
		})
	}
	req := httptest.NewRequest("POST", "/async-function/nap", strings.NewReader(string(napArgs(k, ms))))
	req.Header.Set("X-Callback-Url", url)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("async call: %d %s", rec.Code, rec.Body)
	}
	return rec.Header().Get("X-Call-Id"), rec.Header().Get(openfaas.HeaderInvocation)
}

// The instance an async call came to dies before the job finishes on
// another: the callback is still sent, once, by the instance that
// finished it, with the result and the caller's call id; the callback URL
// (here with a token) is sealed in the queued message.
func TestCallbackSurvivesSubmitter(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	a := newInstance(t, "mforch-a", ns.url(), key, instanceConfig{workers: 0, idle: time.Hour, ackWait: 3 * time.Second})
	b := newInstance(t, "mforch-b", ns.url(), key, instanceConfig{workers: 1, idle: time.Hour, ackWait: 3 * time.Second})
	pa, pb := provider(t, a), provider(t, b)
	cbs := newCallbacks(t)
	k := fmt.Sprintf("survive-%d", time.Now().UnixNano())
	callID, id := submitAsync(t, pa.Handler(), pb.Handler(), k, 1500, cbs.srv.URL+"/done?token=s3cret-callback")
	if callID == "" || id == "" {
		t.Fatalf("call id %q, invocation id %q", callID, id)
	}
	eventually(t, "the job starts on b", func() bool { return runCount(k) == 1 })
	m, err := b.q.stream.GetLastMsgForSubject(context.Background(), b.q.opts.Subject+".fn.*."+id)
	if err != nil {
		t.Fatalf("the queued message: %v", err)
	}
	if strings.Contains(string(m.Data), "s3cret-callback") || strings.Contains(string(m.Data), cbs.srv.URL) {
		t.Errorf("the callback URL is in clear in the queued message: %s", m.Data)
	}
	a.kill() // abruptly, while b runs the job
	got := cbs.wait(t, 20*time.Second, 2*time.Second)
	if len(got) != 1 {
		t.Fatalf("%d callbacks, want 1: %+v", len(got), got)
	}
	if c := got[0]; c.status != "200" || !strings.Contains(c.body, k) || c.callID != callID || c.name != "nap" {
		t.Errorf("callback: %+v, want status 200, body %s, call id %s, function nap", c, k, callID)
	}
	if n := runCount(k); n != 1 {
		t.Errorf("ran %d times", n)
	}
	if st := b.q.Stats(); st.Callbacks != 1 {
		t.Errorf("b's stats: %+v, want 1 callback claimed", st)
	}
	if e, err := b.q.claims.Get(context.Background(), id); err != nil {
		t.Errorf("the claim: %v", err)
	} else if !strings.Contains(string(e.Value()), "mforch-b") {
		t.Errorf("the claim: %s, want b's", e.Value())
	}
}

// The instance that ran the job stored its result but could not claim the
// callback (its provider was not up yet, as an instance that dies between
// the two): the message comes back, the result is found stored, and the
// callback is claimed and sent then, once, without running the job again.
// A second claim of the same invocation is refused.
func TestCallbackClaimedOnRedelivery(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	a := newInstance(t, "mforch-a", ns.url(), key, instanceConfig{workers: 0, idle: time.Hour, ackWait: 3 * time.Second})
	b := newInstance(t, "mforch-b", ns.url(), key, instanceConfig{workers: 1, idle: time.Hour, ackWait: 3 * time.Second})
	pa := provider(t, a)
	cbs := newCallbacks(t)
	k := fmt.Sprintf("redeliver-%d", time.Now().UnixNano())
	_, id := submitAsync(t, pa.Handler(), nil, k, 200, cbs.srv.URL+"/done")
	eventually(t, "the job starts on b", func() bool { return runCount(k) == 1 })
	a.kill()
	eventually(t, "b stores the result", func() bool { return b.q.Stats().Results == 1 })
	select {
	case <-cbs.ch:
		t.Fatal("a callback with no instance to claim it")
	case <-time.After(500 * time.Millisecond):
	}
	provider(t, b) // b can send callbacks now
	got := cbs.wait(t, 20*time.Second, 2*time.Second)
	if len(got) != 1 || got[0].status != "200" || !strings.Contains(got[0].body, k) {
		t.Fatalf("callbacks: %+v, want one with %s", got, k)
	}
	if n := runCount(k); n != 1 {
		t.Errorf("ran %d times", n)
	}
	if st := b.q.Stats(); st.Callbacks != 1 || st.Skipped < 1 {
		t.Errorf("b's stats: %+v, want 1 callback claimed on a redelivery that was skipped", st)
	}
	// Claimed already: another claim sends nothing.
	sent := false
	b.q.OnCallback(func([]byte, *orchestrator.Invocation) { sent = true })
	if err := b.q.claimCallback(id, []byte(`{}`), nil); err != nil || sent {
		t.Errorf("a second claim: %v, sent %v", err, sent)
	}
	// NATS away: nothing claimed, and an error saying so.
	ns.stop()
	err := b.q.claimCallback("other", []byte(`{}`), []byte(`{}`))
	if !errors.Is(err, ErrCallback) || sent {
		t.Errorf("a claim with NATS away: %v, sent %v", err, sent)
	}
}
