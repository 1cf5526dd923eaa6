package openfaas

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openfaas/faas-provider/auth"
	"github.com/openfaas/faas-provider/logs"
	"github.com/openfaas/faas-provider/types"

	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/deploy"
	"github.com/microfaas/microfaas/orchestrator/simworker"
	"github.com/microfaas/microfaas/orchestrator/state"
)

func sha(data string, rounds int) string {
	d := []byte(data)
	for i := 0; i < rounds; i++ {
		s := sha256.Sum256(d)
		d = s[:]
	}
	return hex.EncodeToString(d)
}

func ptr[T any](v T) *T { return &v }

// step is one request of a route test and what must come back.
type step struct {
	name         string
	method, path string
	body         any
	hdr          []string
	want         int
	wantBody     string // substring of the response body
	check        func(t *testing.T, res *http.Response, body []byte)
}

func runSteps(t *testing.T, h *harness, steps []step) {
	t.Helper()
	for _, s := range steps {
		res, body := h.call(s.method, s.path, s.body, s.hdr...)
		if res.StatusCode != s.want {
			t.Fatalf("%s: %s %s: status %d, want %d; body %q", s.name, s.method, s.path, res.StatusCode, s.want, body)
		}
		if s.wantBody != "" && !strings.Contains(string(body), s.wantBody) {
			t.Fatalf("%s: %s %s: body %q, want it to contain %q", s.name, s.method, s.path, body, s.wantBody)
		}
		if s.check != nil {
			s.check(t, res, body)
		}
	}
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %T: %v: %s", v, err, b)
	}
	return v
}

// TestRoutes walks every route of the provider contract, in an order that
// builds on itself, with faas-provider's own types, against a real
// orchestrator whose workers run the real worker runtime.
func TestRoutes(t *testing.T) {
	h, _ := newSimHarness(t, 2, 0, orchestrator.Config{}, Config{Version: "test", Commit: "abc123"})
	shaDeploy := types.FunctionDeployment{
		Service: "sha", Image: "microfaas/cascading_sha256", EnvProcess: "ignored",
		EnvVars:     map[string]string{"exec_timeout": "30"},
		Labels:      &map[string]string{"com.openfaas.scale.min": "1"},
		Annotations: &map[string]string{"topic": "hashes"},
		Limits:      &types.FunctionResources{Memory: "128Mi"},
	}
	callback := make(chan *http.Request, 4)
	callbackBodies := make(chan string, 4)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		callback <- r
		callbackBodies <- string(b)
	}))
	defer cb.Close()

	runSteps(t, h, []step{
		{name: "health", method: "GET", path: "/healthz", want: 200, wantBody: "OK"},
		{name: "info", method: "GET", path: "/system/info", want: 200, check: func(t *testing.T, _ *http.Response, b []byte) {
			info := decode[types.ProviderInfo](t, b)
			if info.Name != "microfaas" || info.Orchestration != "microfaas" || info.Version == nil ||
				info.Version.Release != "test" || info.Version.SHA != "abc123" {
				t.Errorf("info %+v", info)
			}
		}},
		{name: "namespaces", method: "GET", path: "/system/namespaces", want: 200, check: func(t *testing.T, _ *http.Response, b []byte) {
			if ns := decode[[]string](t, b); !slices.Equal(ns, []string{Namespace}) {
				t.Errorf("namespaces %v", ns)
			}
		}},
		{name: "mutate namespace", method: "GET", path: "/system/namespace/x", want: 501},
		{name: "empty list", method: "GET", path: "/system/functions", want: 200, check: func(t *testing.T, _ *http.Response, b []byte) {
			if l := decode[[]types.FunctionStatus](t, b); len(l) != 0 {
				t.Errorf("list %+v", l)
			}
		}},
		{name: "deploy built-in", method: "POST", path: "/system/functions", body: shaDeploy, want: 202},
		{name: "deploy again", method: "POST", path: "/system/functions", body: shaDeploy, want: 409, wantBody: "already exists"},
		{name: "deploy a container image", method: "POST", path: "/system/functions",
			body: types.FunctionDeployment{Service: "web", Image: "nginx:latest"}, want: 400, wantBody: "run-time deploys are not enabled"},
		{name: "deploy unknown built-in", method: "POST", path: "/system/functions",
			body: types.FunctionDeployment{Service: "x", Image: "microfaas/nope"}, want: 400, wantBody: `no built-in function "nope"`},
		{name: "deploy tagged built-in", method: "POST", path: "/system/functions",
			body: types.FunctionDeployment{Service: "x", Image: "microfaas/matmul:v2"}, want: 400, wantBody: "no versions"},
		{name: "deploy user function", method: "POST", path: "/system/functions",
			body: types.FunctionDeployment{Service: "wc", Image: "microfaas/fn:wordcount"}, want: 202},
		{name: "deploy a user function with a built-in's name", method: "POST", path: "/system/functions",
			body: types.FunctionDeployment{Service: "y", Image: "microfaas/fn:matmul"}, want: 400, wantBody: "built-in"},
		{name: "deploy with missing secret", method: "POST", path: "/system/functions",
			body: types.FunctionDeployment{Service: "z", Image: "microfaas/matmul", Secrets: []string{"db"}}, want: 400, wantBody: `secret "db" not found`},
		{name: "deploy in another namespace", method: "POST", path: "/system/functions",
			body: types.FunctionDeployment{Service: "z", Image: "microfaas/matmul", Namespace: "prod"}, want: 400, wantBody: "openfaas-fn"},
		{name: "deploy bad exec_timeout", method: "POST", path: "/system/functions",
			body: types.FunctionDeployment{Service: "z", Image: "microfaas/matmul", EnvVars: map[string]string{"exec_timeout": "soon"}}, want: 400, wantBody: "exec_timeout"},
		{name: "deploy bad name", method: "POST", path: "/system/functions",
			body: types.FunctionDeployment{Service: "a/b", Image: "microfaas/matmul"}, want: 400},
		{name: "deploy not JSON", method: "POST", path: "/system/functions", body: "{", want: 400},
		{name: "update unknown", method: "PUT", path: "/system/functions",
			body: types.FunctionDeployment{Service: "ghost", Image: "microfaas/matmul"}, want: 404},
		{name: "update", method: "PUT", path: "/system/functions", body: func() types.FunctionDeployment {
			d := shaDeploy
			d.Annotations = &map[string]string{"topic": "digests"}
			return d
		}(), want: 202},
		{name: "update to an image we cannot run", method: "PUT", path: "/system/functions",
			body: types.FunctionDeployment{Service: "sha", Image: "alpine"}, want: 400},
		{name: "status", method: "GET", path: "/system/function/sha", want: 200, check: func(t *testing.T, _ *http.Response, b []byte) {
			st := decode[types.FunctionStatus](t, b)
			if st.Name != "sha" || st.Image != "microfaas/cascading_sha256" || st.Namespace != Namespace ||
				st.EnvProcess != "ignored" || st.EnvVars["exec_timeout"] != "30" ||
				st.Labels == nil || (*st.Labels)["com.openfaas.scale.min"] != "1" ||
				st.Annotations == nil || (*st.Annotations)["topic"] != "digests" ||
				st.Limits == nil || st.Limits.Memory != "128Mi" || st.CreatedAt.IsZero() {
				t.Errorf("status %+v", st)
			}
			if st.Replicas != 0 || st.AvailableReplicas != 0 {
				t.Errorf("every worker is off, but replicas %d/%d", st.AvailableReplicas, st.Replicas)
			}
		}},
		{name: "status with our namespace", method: "GET", path: "/system/function/sha?namespace=openfaas-fn", want: 200},
		{name: "status in another namespace", method: "GET", path: "/system/function/sha?namespace=prod", want: 400},
		{name: "status unknown", method: "GET", path: "/system/function/ghost", want: 404},
		{name: "list", method: "GET", path: "/system/functions", want: 200, check: func(t *testing.T, _ *http.Response, b []byte) {
			l := decode[[]types.FunctionStatus](t, b)
			if len(l) != 2 || l[0].Name != "sha" || l[1].Name != "wc" || l[1].Image != "microfaas/fn:wordcount" {
				t.Errorf("list %+v", l)
			}
		}},
		{name: "invoke", method: "POST", path: "/function/sha", body: `{"data":"abc","rounds":3}`, want: 200,
			wantBody: sha("abc", 3), check: func(t *testing.T, res *http.Response, b []byte) {
				if string(b) != sha("abc", 3) {
					t.Errorf("body %q, want exactly the digest", b)
				}
				if ct := res.Header.Get("Content-Type"); ct != "text/plain" {
					t.Errorf("Content-Type %q", ct)
				}
				if d, err := strconv.ParseFloat(res.Header.Get("X-Duration-Seconds"), 64); err != nil || d <= 0 {
					t.Errorf("X-Duration-Seconds %q", res.Header.Get("X-Duration-Seconds"))
				}
				for _, k := range []string{"X-Call-Id", "X-Start-Time", HeaderInvocation, HeaderWorker, HeaderExecMS} {
					if res.Header.Get(k) == "" {
						t.Errorf("no %s header", k)
					}
				}
			}},
		{name: "invoke with the gateway's call id", method: "POST", path: "/function/sha", body: `{"data":"abc","rounds":1}`,
			hdr: []string{"X-Call-Id", "gw-call-1", "X-Start-Time", "1"}, want: 200, check: func(t *testing.T, res *http.Response, b []byte) {
				// The gateway sets both on its own response; the provider must
				// not add a second, different one.
				if res.Header.Get("X-Call-Id") != "" || res.Header.Get("X-Start-Time") != "" {
					t.Errorf("headers %v", res.Header)
				}
			}},
		{name: "invoke with path and query, GET", method: "GET", path: "/function/sha/some/path?q=1", body: `{"data":"x","rounds":2}`,
			want: 200, wantBody: sha("x", 2)},
		{name: "invoke, trailing slash, PUT", method: "PUT", path: "/function/sha/", body: `{"data":"x","rounds":2}`, want: 200, wantBody: sha("x", 2)},
		{name: "invoke, DELETE", method: "DELETE", path: "/function/sha", body: `{"data":"x","rounds":2}`, want: 200, wantBody: sha("x", 2)},
		{name: "invoke, PATCH", method: "PATCH", path: "/function/sha", body: `{"data":"x","rounds":2}`, want: 200, wantBody: sha("x", 2)},
		{name: "invoke, TRACE", method: "TRACE", path: "/function/sha", want: 405},
		{name: "invoke unknown", method: "POST", path: "/function/ghost", body: `{}`, want: 404},
		{name: "scale unknown", method: "POST", path: "/system/scale-function/ghost",
			body: types.ScaleServiceRequest{ServiceName: "ghost", Replicas: 1}, want: 404},
		{name: "scale, mismatched name", method: "POST", path: "/system/scale-function/sha",
			body: types.ScaleServiceRequest{ServiceName: "wc", Replicas: 1}, want: 400},
		{name: "scale", method: "POST", path: "/system/scale-function/sha",
			body: types.ScaleServiceRequest{ServiceName: "sha", Replicas: 1}, want: 202},
		{name: "scale to zero", method: "POST", path: "/system/scale-function/sha",
			body: types.ScaleServiceRequest{ServiceName: "sha", Replicas: 0}, want: 202},
		{name: "invocation count", method: "GET", path: "/system/function/sha", want: 200, check: func(t *testing.T, _ *http.Response, b []byte) {
			if st := decode[types.FunctionStatus](t, b); st.InvocationCount != 6 {
				t.Errorf("invocationCount %v, want 6", st.InvocationCount)
			}
		}},
		{name: "logs", method: "GET", path: "/system/logs?name=sha&tail=2&follow=false", want: 200, check: func(t *testing.T, res *http.Response, b []byte) {
			if ct := res.Header.Get("Content-Type"); ct != "application/x-ndjson" {
				t.Errorf("Content-Type %q", ct)
			}
			msgs := ndjson(t, b)
			if len(msgs) != 2 {
				t.Fatalf("%d messages, want 2: %s", len(msgs), b)
			}
			for _, m := range msgs {
				if m.Name != "sha" || m.Namespace != Namespace || !strings.HasPrefix(m.Instance, "vm") ||
					m.Timestamp.IsZero() || !strings.Contains(m.Text, ": 200 in ") {
					t.Errorf("log message %+v", m)
				}
			}
		}},
		{name: "logs of the unknown", method: "GET", path: "/system/logs?name=ghost&follow=false", want: 200, check: func(t *testing.T, _ *http.Response, b []byte) {
			if msgs := ndjson(t, b); len(msgs) != 0 {
				t.Errorf("%d messages", len(msgs))
			}
		}},
		{name: "no secrets", method: "GET", path: "/system/secrets", want: 200, wantBody: "[]"},
		{name: "create secret", method: "POST", path: "/system/secrets", body: types.Secret{Name: "db", Value: "s3cret"}, want: 201},
		{name: "create secret again", method: "POST", path: "/system/secrets", body: types.Secret{Name: "db", Value: "x"}, want: 409},
		{name: "create raw secret", method: "POST", path: "/system/secrets", body: types.Secret{Name: "key", RawValue: []byte{0, 1, 2}}, want: 201},
		{name: "list secrets", method: "GET", path: "/system/secrets", want: 200, check: func(t *testing.T, _ *http.Response, b []byte) {
			l := decode[[]types.Secret](t, b)
			if len(l) != 2 || l[0].Name != "db" || l[1].Name != "key" || l[0].Value != "" || l[1].RawValue != nil {
				t.Errorf("secrets %+v (values must not be listed)", l)
			}
		}},
		{name: "update secret", method: "PUT", path: "/system/secrets", body: types.Secret{Name: "db", Value: "n3w"}, want: 202},
		{name: "update missing secret", method: "PUT", path: "/system/secrets", body: types.Secret{Name: "nope", Value: "x"}, want: 404},
		{name: "deploy with secret", method: "POST", path: "/system/functions",
			body: types.FunctionDeployment{Service: "mm", Image: "microfaas/matmul:latest", Secrets: []string{"db"}}, want: 202},
		{name: "delete secret in use", method: "DELETE", path: "/system/secrets", body: types.Secret{Name: "db"}, want: 409, wantBody: "mm"},
		{name: "delete secret", method: "DELETE", path: "/system/secrets", body: types.Secret{Name: "key"}, want: 202},
		{name: "delete missing secret", method: "DELETE", path: "/system/secrets", body: types.Secret{Name: "key"}, want: 404},
		{name: "async", method: "POST", path: "/async-function/sha", body: `{"data":"async","rounds":4}`,
			hdr: []string{"X-Callback-Url", cb.URL + "/done", "X-Call-Id", "async-1"}, want: 202, check: func(t *testing.T, res *http.Response, _ []byte) {
				select {
				case r := <-callback:
					body := <-callbackBodies
					if body != sha("async", 4) || r.URL.Path != "/done" || r.Header.Get("X-Call-Id") != "async-1" ||
						r.Header.Get("X-Function-Status") != "200" || r.Header.Get("X-Function-Name") != "sha" ||
						r.Header.Get("X-Duration-Seconds") == "" || r.Header.Get("Content-Type") != "text/plain" {
						t.Errorf("callback %s %v: %q", r.URL, r.Header, body)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("no callback")
				}
			}},
		{name: "async, bad callback", method: "POST", path: "/async-function/sha", body: `{}`,
			hdr: []string{"X-Callback-Url", "/relative"}, want: 400},
		{name: "async, GET", method: "GET", path: "/async-function/sha", want: 405},
		{name: "delete", method: "DELETE", path: "/system/functions", body: types.DeleteFunctionRequest{FunctionName: "sha"}, want: 202},
		{name: "delete again", method: "DELETE", path: "/system/functions", body: types.DeleteFunctionRequest{FunctionName: "sha"}, want: 404},
		{name: "invoke deleted", method: "POST", path: "/function/sha", body: `{}`, want: 404},
		{name: "list after delete", method: "GET", path: "/system/functions", want: 200, check: func(t *testing.T, _ *http.Response, b []byte) {
			l := decode[[]types.FunctionStatus](t, b)
			if len(l) != 2 || l[0].Name != "mm" || l[1].Name != "wc" {
				t.Errorf("list %+v", l)
			}
		}},
		{name: "unknown system route", method: "GET", path: "/system/nope", want: 404},
	})
}

func ndjson(t *testing.T, b []byte) []logs.Message {
	t.Helper()
	var out []logs.Message
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		out = append(out, decode[logs.Message](t, sc.Bytes()))
	}
	return out
}

// TestInvokeOutcomes checks how results and failures map to HTTP.
func TestInvokeOutcomes(t *testing.T) {
	h, _ := newSimHarness(t, 2, 0, orchestrator.Config{}, Config{})
	for _, d := range []types.FunctionDeployment{
		{Service: "sha", Image: "microfaas/cascading_sha256"},
		{Service: "sha-slow", Image: "microfaas/cascading_sha256", EnvVars: map[string]string{"exec_timeout": "100ms"}},
		{Service: "sha-json", Image: "microfaas/cascading_sha256", EnvVars: map[string]string{"content_type": "application/vnd.digest"}},
		{Service: "float", Image: "microfaas/float_operations"},
		{Service: "matmul", Image: "microfaas/matmul"},
	} {
		if res, b := h.call("POST", "/system/functions", d); res.StatusCode != 202 {
			t.Fatalf("deploy %s: %d %s", d.Service, res.StatusCode, b)
		}
	}
	tests := []struct {
		name, fn, body string
		want           int
		wantCT         string
		wantBody       string // substring
	}{
		{"string result", "sha", `{"data":"a","rounds":1}`, 200, "text/plain", sha("a", 1)},
		{"object result", "float", `{"n":10}`, 200, "application/json", `"checksum"`},
		{"content_type envVar", "sha-json", `{"data":"a","rounds":1}`, 200, "application/vnd.digest", sha("a", 1)},
		{"function error", "matmul", `{"A":[[1,2],[3,4]],"B":[[1]]}`, 500, "text/plain", "matmul"},
		{"empty body is {}", "sha", ``, 500, "text/plain", "data"},
		{"body not JSON reaches the function as a string", "sha", `hello`, 500, "text/plain", "cascading_sha256"},
		{"timeout", "sha-slow", `{"data":"a","rounds":10000000}`, 504, "text/plain", "timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, b := h.call("POST", "/function/"+tt.fn, tt.body)
			if res.StatusCode != tt.want || res.Header.Get("Content-Type") != tt.wantCT || !strings.Contains(string(b), tt.wantBody) {
				t.Errorf("%d %q %q, want %d %q containing %q", res.StatusCode, res.Header.Get("Content-Type"), b, tt.want, tt.wantCT, tt.wantBody)
			}
			if res.Header.Get("X-Duration-Seconds") == "" || res.Header.Get("X-Call-Id") == "" {
				t.Errorf("headers %v", res.Header)
			}
		})
	}
}

// TestNoWorker: a cluster whose workers cannot join (they hold the wrong
// secret, so the orchestrator refuses them until it marks them failed)
// answers 503, first when the call finds no worker in time, then at once.
func TestNoWorker(t *testing.T) {
	h, sim := newSimHarness(t, 1, 0, orchestrator.Config{MaxBootFailures: 2, PowerUpTimeout: 2 * time.Second},
		Config{QueueTimeout: 3 * time.Second})
	sim.SecretFor["vm0"] = bytes.Repeat([]byte{7}, 32)
	if res, b := h.call("POST", "/system/functions", types.FunctionDeployment{Service: "sha", Image: "microfaas/cascading_sha256"}); res.StatusCode != 202 {
		t.Fatalf("deploy: %d %s", res.StatusCode, b)
	}
	res, b := h.call("POST", "/function/sha", `{"data":"a","rounds":1}`)
	if res.StatusCode != 503 {
		t.Fatalf("first call: %d %q, want 503", res.StatusCode, b)
	}
	t.Logf("first call: 503 %s", b)
	h.waitUntil("worker failed", 10*time.Second, func() bool { return h.orch.Status().Workers[0].State == state.Failed })
	start := time.Now()
	res, b = h.call("POST", "/function/sha", `{"data":"a","rounds":1}`)
	if res.StatusCode != 503 || !strings.Contains(string(b), "failed to boot") || time.Since(start) > time.Second {
		t.Fatalf("second call: %d %q after %s, want 503 at once", res.StatusCode, b, time.Since(start))
	}
	res, b = h.call("POST", "/async-function/sha", `{"data":"a","rounds":1}`)
	if res.StatusCode != 503 {
		t.Fatalf("async call: %d %q, want 503", res.StatusCode, b)
	}
}

// TestScaleFromZero is the gateway's scale-from-zero sequence: status with
// no replica, a scale request, polling until a replica is available, then
// the call, which must run on the worker the scale request booted. With an
// idle timeout, scaling again while that worker is up boots nothing more.
func TestScaleFromZero(t *testing.T) {
	for _, idle := range []time.Duration{0, 10 * time.Second} {
		t.Run(fmt.Sprintf("idle %s", idle), func(t *testing.T) {
			h, sim := newSimHarness(t, 2, 300*time.Millisecond, orchestrator.Config{IdleTimeout: idle}, Config{})
			if res, b := h.call("POST", "/system/functions", types.FunctionDeployment{Service: "sha", Image: "microfaas/cascading_sha256"}); res.StatusCode != 202 {
				t.Fatalf("deploy: %d %s", res.StatusCode, b)
			}
			st := h.status("sha")
			if st.Replicas != 0 || st.AvailableReplicas != 0 {
				t.Fatalf("before: replicas %d available %d, want 0 and 0", st.Replicas, st.AvailableReplicas)
			}
			start := time.Now()
			if res, b := h.call("POST", "/system/scale-function/sha", types.ScaleServiceRequest{ServiceName: "sha", Replicas: 1}); res.StatusCode != 202 {
				t.Fatalf("scale: %d %s", res.StatusCode, b)
			}
			// The scale request powers a worker on before it answers.
			if ws := h.orch.Status().Workers; ws[0].State == state.Off && ws[1].State == state.Off {
				t.Fatalf("no worker booting after the scale request: %+v", ws)
			}
			// The gateway polls the status; here, after every state change.
			h.waitUntil("a replica available", 10*time.Second, func() bool {
				st = h.status("sha")
				if st.Replicas != st.AvailableReplicas {
					t.Fatalf("replicas %d, available %d: a booting worker must count in neither", st.Replicas, st.AvailableReplicas)
				}
				return st.AvailableReplicas > 0
			})
			t.Logf("available after %s", time.Since(start).Round(time.Millisecond))
			res, b := h.call("POST", "/function/sha", `{"data":"z","rounds":5}`)
			if res.StatusCode != 200 || string(b) != sha("z", 5) {
				t.Fatalf("call: %d %q", res.StatusCode, b)
			}
			if n := powerOns(sim); n != 1 {
				t.Errorf("%d power-ons, want 1: the call should run on the worker the scale request booted", n)
			}
			if idle == 0 {
				return
			}
			// The scale request decides before it answers (Orchestrator.Warm
			// waits for the loop): a second worker would be booting now.
			h.call("POST", "/system/scale-function/sha", types.ScaleServiceRequest{ServiceName: "sha", Replicas: 1})
			if up := workersUp(h); up != 1 {
				t.Errorf("scaling with a worker up powered another on (%d workers up): %+v", up, h.orch.Status().Workers)
			}
		})
	}
}

// TestScaleFromZeroContended: the worker that would serve the gateway's
// held call goes to another function's call and then off, either after the
// scale request booted it or because that other call booted it before. The
// status the gateway polls must lead to another worker rather than to no
// replica for the gateway's whole holding time.
func TestScaleFromZeroContended(t *testing.T) {
	for _, otherFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("other call first %v", otherFirst), func(t *testing.T) {
			h, sim := newSimHarness(t, 1, 300*time.Millisecond, orchestrator.Config{}, Config{})
			h.deploy(types.FunctionDeployment{Service: "sha", Image: "microfaas/cascading_sha256"})
			h.deploy(types.FunctionDeployment{Service: "other", Image: "microfaas/cascading_md5"})
			other := make(chan int, 1)
			callOther := func() {
				go func() {
					res, _ := h.call("POST", "/function/other", `{"data":"x","rounds":1}`)
					other <- res.StatusCode
				}()
			}
			if otherFirst {
				callOther()
				waitState(t, h, state.Booting)
			}
			// The gateway: status, then scale when it sees no replica.
			if st := h.status("sha"); st.Replicas != 0 || st.AvailableReplicas != 0 {
				t.Fatalf("status while the only worker boots for another call: %d/%d, want 0/0", st.AvailableReplicas, st.Replicas)
			}
			start := time.Now()
			if res, b := h.call("POST", "/system/scale-function/sha", types.ScaleServiceRequest{ServiceName: "sha", Replicas: 1}); res.StatusCode != 202 {
				t.Fatalf("scale: %d %s", res.StatusCode, b)
			}
			if !otherFirst {
				waitState(t, h, state.Booting)
				callOther()
			}
			if code := <-other; code != 200 {
				t.Fatalf("other call: %d", code)
			}
			h.waitAllOff(10 * time.Second)
			h.waitUntil("a replica for sha", 10*time.Second-time.Since(start), func() bool { return h.status("sha").AvailableReplicas > 0 })
			if res, b := h.call("POST", "/function/sha", `{"data":"z","rounds":5}`); res.StatusCode != 200 || string(b) != sha("z", 5) {
				t.Fatalf("call: %d %q", res.StatusCode, b)
			}
			if n := powerOns(sim); n != 2 {
				t.Errorf("%d power-ons, want 2 (one taken by the other call, one for sha)", n)
			}
			// The scale request is spent: polling the status boots nothing more.
			// A status that would boot one does so before it answers.
			h.waitAllOff(10 * time.Second)
			h.status("sha")
			if up := workersUp(h); up != 0 {
				t.Errorf("%d workers up after polling the status, want none: %+v", up, h.orch.Status().Workers)
			}
		})
	}
}

// waitState waits until the first worker is in state s.
func waitState(t *testing.T, h *harness, s state.Name) {
	t.Helper()
	h.waitUntil(fmt.Sprintf("worker %s", s), 10*time.Second, func() bool { return h.orch.Status().Workers[0].State == s })
}

// workersUp counts the workers that are not off.
func workersUp(h *harness) int {
	n := 0
	for _, w := range h.orch.Status().Workers {
		if w.State != state.Off {
			n++
		}
	}
	return n
}

// powerOns counts the workers sim has powered on. PowerOns is written
// under the controller's lock; Running takes that lock, which orders the
// read after the writes.
func powerOns(sim *simworker.Controller) int {
	sim.Running("")
	return sim.PowerOns
}

// TestBasicAuth: every /system route needs the credentials; invocation and
// health routes do not, as in OpenFaaS.
func TestBasicAuth(t *testing.T) {
	creds := &auth.BasicAuthCredentials{User: "admin", Password: "pw-" + strconv.Itoa(os.Getpid())}
	h, _ := newSimHarness(t, 1, 0, orchestrator.Config{}, Config{Auth: creds})
	h.creds = nil // send credentials by hand below
	authz := func(user, pw string) []string {
		r, _ := http.NewRequest("GET", "/", nil)
		r.SetBasicAuth(user, pw)
		return []string{"Authorization", r.Header.Get("Authorization")}
	}
	dep := types.FunctionDeployment{Service: "sha", Image: "microfaas/cascading_sha256"}
	protected := []struct {
		method, path string
		body         any
		ok           int
	}{
		{"POST", "/system/functions", dep, 202},
		{"GET", "/system/functions", nil, 200},
		{"PUT", "/system/functions", dep, 202},
		{"GET", "/system/function/sha", nil, 200},
		{"POST", "/system/scale-function/sha", types.ScaleServiceRequest{ServiceName: "sha"}, 202},
		{"GET", "/system/info", nil, 200},
		{"GET", "/system/namespaces", nil, 200},
		{"GET", "/system/secrets", nil, 200},
		{"POST", "/system/secrets", types.Secret{Name: "s", Value: "v"}, 201},
		{"GET", "/system/logs?name=sha&follow=false", nil, 200},
		{"DELETE", "/system/functions", types.DeleteFunctionRequest{FunctionName: "sha"}, 202},
	}
	for _, tt := range protected {
		for _, c := range []struct {
			name string
			hdr  []string
		}{{"none", nil}, {"wrong password", authz("admin", "nope")}, {"wrong user", authz("root", creds.Password)}} {
			res, _ := h.call(tt.method, tt.path, tt.body, c.hdr...)
			if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with %s credentials: %d, want 401 with WWW-Authenticate", tt.method, tt.path, c.name, res.StatusCode)
			}
		}
		if res, b := h.call(tt.method, tt.path, tt.body, authz(creds.User, creds.Password)...); res.StatusCode != tt.ok {
			t.Errorf("%s %s with credentials: %d %s, want %d", tt.method, tt.path, res.StatusCode, b, tt.ok)
		}
	}
	// Open routes.
	h.call("POST", "/system/functions", dep, authz(creds.User, creds.Password)...)
	if res, _ := h.call("GET", "/healthz", nil); res.StatusCode != 200 {
		t.Errorf("healthz: %d", res.StatusCode)
	}
	if res, b := h.call("POST", "/function/sha", `{"data":"a","rounds":1}`); res.StatusCode != 200 {
		t.Errorf("invoke: %d %s", res.StatusCode, b)
	}
}

// TestAsyncOutcomes: callbacks carry the function's status, errors
// included, and calls without a callback still run.
func TestAsyncOutcomes(t *testing.T) {
	h, _ := newSimHarness(t, 2, 0, orchestrator.Config{}, Config{})
	h.call("POST", "/system/functions", types.FunctionDeployment{Service: "mm", Image: "microfaas/matmul"})
	type got struct {
		status, callID, body string
	}
	calls := make(chan got, 4)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		calls <- got{r.Header.Get("X-Function-Status"), r.Header.Get("X-Call-Id"), string(b)}
	}))
	defer cb.Close()
	tests := []struct {
		name, body, wantStatus, wantBody string
	}{
		{"ok", `{"A":[[1,0],[0,1]],"B":[[2,3],[4,5]]}`, "200", `"n":2`},
		{"error", `{"A":[[1]],"B":"x"}`, "500", "matmul"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, b := h.call("POST", "/async-function/mm", tt.body, "X-Callback-Url", cb.URL)
			if res.StatusCode != 202 || res.Header.Get("X-Call-Id") == "" {
				t.Fatalf("%d %s %v", res.StatusCode, b, res.Header)
			}
			select {
			case g := <-calls:
				if g.status != tt.wantStatus || g.callID != res.Header.Get("X-Call-Id") || !strings.Contains(g.body, tt.wantBody) {
					t.Errorf("callback %+v, want status %s, call id %s, body with %q", g, tt.wantStatus, res.Header.Get("X-Call-Id"), tt.wantBody)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no callback")
			}
		})
	}
	// Without a callback the call runs and is logged. Its line in the
	// function's log, written after it is counted, is the event waited for.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.srv.URL+"/system/logs?name=mm&follow=true", nil)
	follow, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer follow.Body.Close()
	res, _ := h.call("POST", "/async-function/mm", `{"A":[[1]],"B":[[1]]}`)
	if res.StatusCode != 202 {
		t.Fatalf("no callback: %d", res.StatusCode)
	}
	id := res.Header.Get("X-Call-Id")
	dec := json.NewDecoder(follow.Body)
	for {
		var m logs.Message
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("the async call without a callback never ran (log of mm: %v)", err)
		}
		if strings.Contains(m.Text, "call "+id) {
			break
		}
	}
	if n := h.status("mm").InvocationCount; n != 3 {
		t.Errorf("invocation count %v, want 3", n)
	}
}

// TestLogsFollow streams a function's log while calls happen.
func TestLogsFollow(t *testing.T) {
	h, _ := newSimHarness(t, 1, 0, orchestrator.Config{}, Config{})
	h.call("POST", "/system/functions", types.FunctionDeployment{Service: "sha", Image: "microfaas/cascading_sha256"})
	h.call("POST", "/function/sha", `{"data":"before","rounds":1}`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.srv.URL+"/system/logs?name=sha&follow=true", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	dec := json.NewDecoder(res.Body)
	var first logs.Message
	if err := dec.Decode(&first); err != nil {
		t.Fatal(err)
	}
	go h.call("POST", "/function/sha", `{"data":"after","rounds":1}`)
	var second logs.Message
	if err := dec.Decode(&second); err != nil {
		t.Fatal(err)
	}
	if first.Name != "sha" || second.Name != "sha" || !second.Timestamp.After(first.Timestamp) {
		t.Errorf("messages %+v then %+v", first, second)
	}
	t.Logf("log lines:\n%s\n%s", first.Text, second.Text)
}

// TestStateFile: deployments and secrets survive a restart of the provider.
func TestStateFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "openfaas.json")
	h, _ := newSimHarness(t, 1, 0, orchestrator.Config{}, Config{StateFile: file})
	h.call("POST", "/system/secrets", types.Secret{Name: "token", Value: "t0k"})
	h.call("POST", "/system/functions", types.FunctionDeployment{Service: "wc", Image: "microfaas/fn:wordcount",
		Secrets: []string{"token"}, Labels: &map[string]string{"a": "b"}})
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	p2, err := New(Config{Orchestrator: h.orch, StateFile: file})
	if err != nil {
		t.Fatal(err)
	}
	fn, ok := p2.lookup("wc")
	if !ok || fn.target != (target{Function: "wordcount", User: true}) || (*fn.Deployment.Labels)["a"] != "b" {
		t.Fatalf("after restart: %+v %v", fn, ok)
	}
	if s, ok := p2.secrets["token"]; !ok || s.Value != "t0k" {
		t.Fatalf("secret after restart: %+v", p2.secrets)
	}
}

func TestResolveImage(t *testing.T) {
	without := &Provider{cfg: Config{Builtins: []string{"cascading_sha256", "matmul"}}}
	with := &Provider{cfg: Config{Builtins: []string{"cascading_sha256", "matmul"}, Deploys: &deploy.Store{}}}
	tests := []struct {
		p        *Provider
		image    string
		want     target
		wantPull bool
		wantErr  string
	}{
		{without, "microfaas/matmul", target{Function: "matmul"}, false, ""},
		{without, "microfaas/matmul:latest", target{Function: "matmul"}, false, ""},
		{without, "microfaas/fn:wordcount", target{Function: "wordcount", User: true}, false, ""},
		{without, "microfaas/fn:hello.sh", target{Function: "hello.sh", User: true}, false, ""},
		{without, "microfaas/matmul:1.0", target{}, false, "no versions"},
		{without, "microfaas/fn:matmul", target{}, false, "built-in"},
		{without, "microfaas/fn:..", target{}, false, "use letters"},
		{without, "microfaas/fn:a/b", target{}, false, "use letters"},
		{without, "microfaas/fn", target{}, false, `no built-in function "fn"`},
		{without, "microfaas/", target{}, false, "no built-in"},
		{without, "ghcr.io/openfaas/figlet:latest", target{}, false, "run-time deploys are not enabled"},
		{with, "microfaas/matmul", target{Function: "matmul"}, false, ""},
		{with, "microfaas/nope", target{}, false, "no built-in"},
		{with, "ghcr.io/openfaas/figlet:latest", target{Function: "svc", User: true, Deployed: true}, true, ""},
		{with, "docker.io/microfaas/matmul", target{Function: "svc", User: true, Deployed: true}, true, ""},
		{with, "127.0.0.1:5000/fn@sha256:" + strings.Repeat("a", 64), target{Function: "svc", User: true, Deployed: true}, true, ""},
	}
	for _, tt := range tests {
		got, pull, err := tt.p.resolveImage("svc", tt.image)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err %v, want %q", tt.image, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want || pull != tt.wantPull {
			t.Errorf("%q: %+v pull %v %v, want %+v pull %v", tt.image, got, pull, err, tt.want, tt.wantPull)
		}
	}
}

func TestArgs(t *testing.T) {
	builtin, user := target{Function: "f"}, target{Function: "u", User: true}
	tests := []struct {
		name    string
		t       target
		body    string
		want    string
		wantErr bool
	}{
		{"built-in JSON", builtin, `{"a": 1}`, `{"a": 1}`, false},
		{"built-in empty", builtin, ``, `{}`, false},
		{"built-in blank", builtin, " \n", `{}`, false},
		{"built-in text", builtin, `hi`, `"hi"`, false},
		{"user text", user, "a b\n", `"a b\n"`, false},
		{"user JSON stays byte-exact", user, `{"x": "<b>"}`, `"{\"x\": \"\u003cb\u003e\"}"`, false},
		{"user JSON string", user, `"q"`, `"\"q\""`, false},
		{"user empty", user, ``, `""`, false},
		{"user binary", user, "\xff\xfe", ``, true},
	}
	for _, tt := range tests {
		got, err := tt.t.args([]byte(tt.body))
		if tt.wantErr {
			if err == nil {
				t.Errorf("%s: no error", tt.name)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("%s: %s %v, want %s", tt.name, got, err, tt.want)
		}
		// What a user function reads on stdin is the body, exactly.
		if tt.t.User {
			var s string
			if json.Unmarshal(got, &s) != nil || s != tt.body {
				t.Errorf("%s: stdin would be %q, want %q", tt.name, s, tt.body)
			}
		}
	}
}

func TestRender(t *testing.T) {
	fn := &function{Deployment: types.FunctionDeployment{Service: "f"}}
	ct := &function{Deployment: types.FunctionDeployment{Service: "f", EnvVars: map[string]string{"content_type": "text/html"}}}
	tests := []struct {
		name     string
		fn       *function
		inv      orchestrator.Invocation
		queueTO  bool
		want     int
		wantCT   string
		wantBody string
	}{
		{"string", fn, orchestrator.Invocation{Attempts: 1, Result: json.RawMessage(`"a\nb"`)}, false, 200, "text/plain", "a\nb"},
		{"object", fn, orchestrator.Invocation{Attempts: 1, Result: json.RawMessage(`{"k":1}`)}, false, 200, "application/json", `{"k":1}`},
		{"number", fn, orchestrator.Invocation{Attempts: 1, Result: json.RawMessage(`42`)}, false, 200, "application/json", `42`},
		{"content_type", ct, orchestrator.Invocation{Attempts: 1, Result: json.RawMessage(`"<p>"`)}, false, 200, "text/html", `<p>`},
		{"error", fn, orchestrator.Invocation{Attempts: 1, Err: &orchestrator.Error{Kind: orchestrator.ErrFunction, Msg: "boom"}}, false, 500, "text/plain", "boom"},
		{"timeout", fn, orchestrator.Invocation{Attempts: 1, Err: &orchestrator.Error{Kind: orchestrator.ErrTimeout, Msg: "f timed out"}, TimedOut: true}, false, 504, "text/plain", "f timed out"},
		{"never ran", fn, orchestrator.Invocation{Err: orchestrator.ErrClosed}, false, 503, "text/plain", "shutting down"},
		{"no worker in time", fn, orchestrator.Invocation{Err: &orchestrator.Error{Kind: orchestrator.ErrUnavailable, Msg: "withdrawn before it ran: context deadline exceeded"}}, true, 503, "text/plain", "no worker was free"},
	}
	for _, tt := range tests {
		r := tt.fn.render(&tt.inv, tt.queueTO)
		if r.status != tt.want || r.contentType != tt.wantCT || !strings.Contains(string(r.body), tt.wantBody) {
			t.Errorf("%s: %d %q %q, want %d %q %q", tt.name, r.status, r.contentType, r.body, tt.want, tt.wantCT, tt.wantBody)
		}
	}
}

func TestExecTimeout(t *testing.T) {
	for _, tt := range []struct {
		v    string
		want time.Duration
		ok   bool
	}{{"", 0, true}, {"30", 30 * time.Second, true}, {"1m", time.Minute, true}, {"250ms", 250 * time.Millisecond, true},
		{"0", 0, false}, {"-5", 0, false}, {"soon", 0, false}} {
		got, err := execTimeout(map[string]string{"exec_timeout": tt.v})
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("%q: %s %v", tt.v, got, err)
		}
	}
}
