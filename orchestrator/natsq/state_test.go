package natsq

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/openfaas"
)

// call makes one request to h and returns the status and body.
func call(h http.Handler, method, path, body string) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	return rec.Code, rec.Body.String()
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
	}
}

// The OpenFaaS provider of two instances shares deployments and secrets:
// deploy and create a secret on one, invoke through the other, and a
// removal on one is seen by the other. Values are sealed in the bucket.
func TestOpenFaaSDeploymentsShared(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	var provs []*openfaas.Provider
	var ins []*instance
	for i := 0; i < 2; i++ {
		in := newInstance(t, fmt.Sprintf("mforch%d", i), ns.url(), key, instanceConfig{workers: 2, idle: time.Hour})
		st, err := in.q.State(context.Background(), "microfaas_openfaas")
		if err != nil {
			t.Fatal(err)
		}
		p, err := openfaas.New(openfaas.Config{Orchestrator: in.orch, Shared: st})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(context.Background()) })
		provs, ins = append(provs, p), append(ins, in)
	}
	a, b := provs[0].Handler(), provs[1].Handler()
	if code, body := call(a, "POST", "/system/secrets", `{"name":"token","value":"hunter2-secret"}`); code != http.StatusCreated {
		t.Fatalf("secret on a: %d %s", code, body)
	}
	if code, body := call(a, "POST", "/system/functions", `{"service":"nap","image":"microfaas/test_nap","secrets":["token"]}`); code != http.StatusAccepted {
		t.Fatalf("deploy on a: %d %s", code, body)
	}
	eventually(t, "b lists the function a deployed", func() bool {
		_, body := call(b, "GET", "/system/functions", "")
		return strings.Contains(body, `"name":"nap"`)
	})
	_, secrets := call(b, "GET", "/system/secrets", "")
	if !strings.Contains(secrets, `"name":"token"`) {
		t.Errorf("b's secrets: %s", secrets)
	}
	k := fmt.Sprintf("shared-%d", time.Now().UnixNano())
	code, body := call(b, "POST", "/function/nap", string(napArgs(k, 1)))
	if code != http.StatusOK || !strings.Contains(body, k) {
		t.Errorf("invoke through b: %d %s", code, body)
	}
	// Sealed in the bucket.
	kv, err := ins[0].q.js.KeyValue(context.Background(), "microfaas_openfaas")
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), "secret.token")
	if err != nil || strings.Contains(string(e.Value()), "hunter2") {
		t.Errorf("the shared secret: %v, in clear: %q", err, e.Value())
	}
	if code, body := call(a, "DELETE", "/system/functions", `{"functionName":"nap"}`); code != http.StatusAccepted {
		t.Fatalf("delete on a: %d %s", code, body)
	}
	eventually(t, "b no longer lists the function a removed", func() bool {
		_, body := call(b, "GET", "/system/functions", "")
		return !strings.Contains(body, `"name":"nap"`)
	})
	if code, _ := call(b, "POST", "/function/nap", "{}"); code != http.StatusNotFound {
		t.Errorf("invoke of a removed function through b: %d", code)
	}
}

// An async call through an instance with no workers runs on another; its
// callback is sent once, with the result.
func TestOpenFaaSAsyncCallbackOnce(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	var hs []http.Handler
	for i, workers := range []int{0, 2} {
		in := newInstance(t, fmt.Sprintf("mforch%d", i), ns.url(), key, instanceConfig{workers: workers, idle: time.Hour})
		st, err := in.q.State(context.Background(), "microfaas_openfaas")
		if err != nil {
			t.Fatal(err)
		}
		p, err := openfaas.New(openfaas.Config{Orchestrator: in.orch, Shared: st})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(context.Background()) })
		hs = append(hs, p.Handler())
	}
	type callback struct{ status, body string }
	got := make(chan callback, 4)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- callback{r.Header.Get("X-Function-Status"), string(b)}
	}))
	defer cb.Close()
	if code, body := call(hs[0], "POST", "/system/functions", `{"service":"nap","image":"microfaas/test_nap"}`); code != http.StatusAccepted {
		t.Fatalf("deploy: %d %s", code, body)
	}
	k := fmt.Sprintf("async-%d", time.Now().UnixNano())
	req := httptest.NewRequest("POST", "/async-function/nap", strings.NewReader(string(napArgs(k, 10))))
	req.Header.Set("X-Callback-Url", cb.URL+"/done")
	rec := httptest.NewRecorder()
	hs[0].ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("async call: %d %s", rec.Code, rec.Body)
	}
	select {
	case c := <-got:
		if c.status != "200" || !strings.Contains(c.body, k) {
			t.Errorf("callback: %+v", c)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no callback")
	}
	select {
	case c := <-got:
		t.Errorf("a second callback: %+v", c)
	case <-time.After(time.Second):
	}
	if runCount(k) != 1 {
		t.Errorf("ran %d times", runCount(k))
	}
}
