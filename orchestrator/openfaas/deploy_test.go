package openfaas

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/openfaas/faas-provider/types"

	"github.com/microfaas/microfaas/bundle/oci"
	"github.com/microfaas/microfaas/internal/testfn"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/deploy"
	"github.com/microfaas/microfaas/protocol"
)

// loopbackRegistry is go-containerregistry's registry on 127.0.0.1; push
// puts an image at repo:tag and returns its reference.
func loopbackRegistry(t *testing.T) (host string, push func(repoTag string, img v1.Image) string) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host = strings.TrimPrefix(srv.URL, "http://")
	return host, func(repoTag string, img v1.Image) string {
		t.Helper()
		ref, err := name.ParseReference(host + "/" + repoTag)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
		return ref.String()
	}
}

// bundleFiles lists the bundle files of a store.
func bundleFiles(t *testing.T, s *deploy.Store) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(s.Dir(), "sha256-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDeployImages: the provider deploys any image through a deploy.Store
// pulling from a loopback registry: 202 and the function listed; an image
// with no linux/amd64 for the x86 workers is refused 400 naming the
// platform; a registry out of reach is 502; an update of a moved tag pulls
// the new image and collects the old bundle; a function deployed with the
// store alone (mforch deploy) is listed too; delete collects its bundle.
func TestDeployImages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the wordcount function")
	}
	bin := testfn.Wordcount(t, "../..", "amd64")
	image := func(version string) v1.Image {
		return testfn.Image(t, "amd64", map[string][]byte{"wordcount": bin, "version": []byte(version)}, nil, "/wordcount")
	}
	_, push := loopbackRegistry(t)
	ref := push("wc:latest", image("1"))
	arm := testfn.Image(t, "arm", map[string][]byte{"app/f": []byte("x")}, nil, "/app/f")
	cf, _ := arm.ConfigFile()
	cf = cf.DeepCopy()
	cf.Variant = "v7"
	arm, err := mutate.ConfigFile(arm, cf)
	if err != nil {
		t.Fatal(err)
	}
	armRef := push("armonly:1", arm)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	store, err := deploy.New(deploy.Config{Dir: t.TempDir(), Resolver: &oci.Resolver{Insecure: []string{"127.0.0.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := newSimHarness(t, 1, 0, orchestrator.Config{Bundles: store}, Config{Deploys: store, Archs: []string{"x86"}})

	var firstBundle string
	runSteps(t, h, []step{
		{name: "deploy an image", method: "POST", path: "/system/functions",
			body: types.FunctionDeployment{Service: "wc", Image: ref, Labels: &map[string]string{"team": "a"}}, want: 202,
			check: func(t *testing.T, _ *http.Response, _ []byte) {
				rec, ok := store.Get("wc")
				if !ok || rec.Image != ref || rec.Archs["x86"].Bundle.Digest == "" || rec.Watchdog {
					t.Fatalf("store record %+v %v", rec, ok)
				}
				firstBundle = rec.Archs["x86"].Bundle.Digest
			}},
		{name: "status", method: "GET", path: "/system/function/wc", want: 200, check: func(t *testing.T, _ *http.Response, b []byte) {
			st := decode[types.FunctionStatus](t, b)
			if st.Image != ref || st.Labels == nil || (*st.Labels)["team"] != "a" {
				t.Errorf("status %+v", st)
			}
		}},
		{name: "deploy an image without linux/amd64", method: "POST", path: "/system/functions",
			body: types.FunctionDeployment{Service: "armonly", Image: armRef}, want: 400, wantBody: "linux/amd64"},
		{name: "deploy from a registry out of reach", method: "POST", path: "/system/functions",
			body: types.FunctionDeployment{Service: "gone", Image: strings.TrimPrefix(closed.URL, "http://") + "/x:1"}, want: 502},
	})
	push("wc:latest", image("2")) // the tag moves
	runSteps(t, h, []step{
		{name: "update after the tag moved", method: "PUT", path: "/system/functions",
			body: types.FunctionDeployment{Service: "wc", Image: ref}, want: 202,
			check: func(t *testing.T, _ *http.Response, _ []byte) {
				rec, _ := store.Get("wc")
				if d := rec.Archs["x86"].Bundle.Digest; d == firstBundle || d == "" {
					t.Errorf("bundle after the update %q; want a new one (was %s)", d, firstBundle)
				}
				if files := bundleFiles(t, store); len(files) != 1 {
					t.Errorf("bundle files %v; want only the new one", files)
				}
			}},
	})

	// Deployed with the store alone, as mforch deploy does.
	if _, err := store.Deploy(context.Background(), "native", ref, []string{"x86"}); err != nil {
		t.Fatal(err)
	}
	runSteps(t, h, []step{
		{name: "list", method: "GET", path: "/system/functions", want: 200, check: func(t *testing.T, _ *http.Response, b []byte) {
			l := decode[[]types.FunctionStatus](t, b)
			if len(l) != 2 || l[0].Name != "native" || l[0].Image != ref || l[1].Name != "wc" {
				t.Errorf("list %+v; want native and wc", l)
			}
		}},
		{name: "update to a built-in gives the image up", method: "PUT", path: "/system/functions",
			body: types.FunctionDeployment{Service: "native", Image: "microfaas/matmul"}, want: 202,
			check: func(t *testing.T, _ *http.Response, _ []byte) {
				if _, ok := store.Get("native"); ok {
					t.Error("the store still has native's image")
				}
			}},
		{name: "delete", method: "DELETE", path: "/system/functions", body: types.DeleteFunctionRequest{FunctionName: "wc"}, want: 202,
			check: func(t *testing.T, _ *http.Response, _ []byte) {
				if _, ok := store.Get("wc"); ok {
					t.Error("the store still has wc")
				}
				if files := bundleFiles(t, store); len(files) != 0 {
					t.Errorf("bundle files after the delete: %v", files)
				}
			}},
		{name: "deleted", method: "GET", path: "/system/function/wc", want: 404},
	})
	// Removed with the store alone (mforch deploy --delete): gone here too.
	if _, err := store.Deploy(context.Background(), "native2", ref, []string{"x86"}); err != nil {
		t.Fatal(err)
	}
	h.call("GET", "/system/function/native2", nil)
	if err := store.Delete("native2"); err != nil {
		t.Fatal(err)
	}
	runSteps(t, h, []step{{name: "removed with the store", method: "GET", path: "/system/function/native2", want: 404}})
}

// echoBackend answers every job as a watchdog function would, from the
// HTTP request the provider built: status 201, the request as JSON in a
// header, a binary body, and two log lines. It is the orchestrator's side
// of the passthrough, so the provider's mapping both ways is tested over
// real HTTP; the worker's side is the runtime's (runtime/functions).
type echoBackend struct {
	Backend
	got chan orchestrator.JobSpec
}

func (b echoBackend) InvokeJob(ctx context.Context, spec orchestrator.JobSpec) (*orchestrator.Invocation, error) {
	b.got <- spec
	req, _ := json.Marshal(spec.HTTP)
	body := append([]byte{0, 0xff, 0xfe}, spec.HTTP.Body...)
	return &orchestrator.Invocation{ID: "inv1", Function: spec.Function, Worker: "vm0", Attempts: 1,
		HTTPResponse: &protocol.HTTPResponse{Status: 201, Body: body, Header: map[string][]string{
			"X-Echo": {string(req)}, "Set-Cookie": {"a=1", "b=2"}, "Connection": {"X-Private"}, "X-Private": {"hop"},
			"Bad Name": {"x"}, "X-Duration-Seconds": {"0.5"},
			// A function may not pass for mforch: these are mforch's to set.
			"X-Microfaas-Worker": {"forged"}, "X-Microfaas-Exec-Ms": {"0.001"}, "X-Call-Id": {"forged"}}},
		Log: "handler started\n\nwrote 3 bytes\n"}, nil
}

func (b echoBackend) Status() orchestrator.Status {
	return orchestrator.Status{Workers: []orchestrator.WorkerStatus{{ID: "vm0"}}}
}

// TestWatchdogPassthrough: a call of a watchdog function reaches the job as
// the whole HTTP request (method, path below the function, raw query,
// headers without hop-by-hop ones, binary body), and the function's status,
// headers and body come back unchanged; its log lines are in the logs route.
func TestWatchdogPassthrough(t *testing.T) {
	be := echoBackend{got: make(chan orchestrator.JobSpec, 1)}
	p, err := New(Config{Orchestrator: be})
	if err != nil {
		t.Fatal(err)
	}
	p.fns["wd"] = &function{Deployment: types.FunctionDeployment{Service: "wd", Image: "example/wd"},
		target: target{Function: "wd", Deployed: true, Watchdog: true}}
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()

	body := []byte{0x89, 'P', 'N', 'G', 0, 0xff}
	req, _ := http.NewRequest("PATCH", srv.URL+"/function/wd/a%2Fb/c?x=1&y=%20z", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "image/png")
	req.Header.Set("X-Custom", "v")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "dropped")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}

	spec := <-be.got
	hr := spec.HTTP
	if hr == nil || spec.Args != nil {
		t.Fatalf("job %+v: want the HTTP request and no args", spec)
	}
	if hr.Method != "PATCH" || hr.Path != "/a%2Fb/c" || hr.Query != "x=1&y=%20z" || string(hr.Body) != string(body) {
		t.Errorf("request %s %q ?%q body %x", hr.Method, hr.Path, hr.Query, hr.Body)
	}
	if hr.Header["Content-Type"][0] != "image/png" || hr.Header["X-Custom"][0] != "v" {
		t.Errorf("request headers %v", hr.Header)
	}
	for _, k := range []string{"Connection", "X-Hop"} {
		if _, ok := hr.Header[k]; ok {
			t.Errorf("hop-by-hop header %s forwarded: %v", k, hr.Header)
		}
	}
	if res.StatusCode != 201 || string(got) != string(append([]byte{0, 0xff, 0xfe}, body...)) {
		t.Errorf("response %d %x", res.StatusCode, got)
	}
	if ct := res.Header.Get("Content-Type"); ct != "" {
		t.Errorf("Content-Type %q: the function sent none", ct)
	}
	if c := res.Header.Values("Set-Cookie"); len(c) != 2 || res.Header.Get("X-Duration-Seconds") != "0.5" {
		t.Errorf("function headers not unchanged: %v", res.Header)
	}
	if res.Header.Get("X-Private") != "" || res.Header.Get("Bad Name") != "" || res.Header.Get(HeaderWorker) != "vm0" {
		t.Errorf("headers %v: want hop-by-hop and invalid names dropped, X-Microfaas-Worker kept", res.Header)
	}
	if v := res.Header.Values(HeaderWorker); len(v) != 1 || res.Header.Get(HeaderExecMS) == "0.001" ||
		len(res.Header.Values("X-Call-Id")) != 1 || res.Header.Get("X-Call-Id") == "forged" {
		t.Errorf("headers %v: the function's X-Microfaas-* and X-Call-Id must not replace mforch's", res.Header)
	}

	lres, err := http.Get(srv.URL + "/system/logs?name=wd&follow=false")
	if err != nil {
		t.Fatal(err)
	}
	defer lres.Body.Close()
	var texts []string
	dec := json.NewDecoder(lres.Body)
	for dec.More() {
		var m struct{ Text string }
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		texts = append(texts, m.Text)
	}
	if len(texts) != 3 || !strings.Contains(texts[0], ": 201 in ") || texts[1] != "handler started" || texts[2] != "wrote 3 bytes" {
		t.Errorf("log messages %q; want the call's line and the function's two lines", texts)
	}
}

func TestRenderHTTPResponse(t *testing.T) {
	fn := &function{Deployment: types.FunctionDeployment{Service: "f"}}
	for _, tt := range []struct {
		name   string
		res    protocol.HTTPResponse
		status int
	}{
		{"teapot", protocol.HTTPResponse{Status: 418, Body: []byte("short and stout")}, 418},
		{"no status", protocol.HTTPResponse{}, 502},
		{"status too large", protocol.HTTPResponse{Status: 1000}, 502},
	} {
		r := fn.render(&orchestrator.Invocation{HTTPResponse: &tt.res}, false)
		if r.status != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, r.status, tt.status)
		}
	}
}

// TestDeployedStateFile: a pulled deployment survives a restart of the
// provider with its whole deployment (labels) from the state file and its
// bundle from the store; one the store lost is dropped, not kept as a
// function no worker can run.
func TestDeployedStateFile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the wordcount function")
	}
	bin := testfn.Wordcount(t, "../..", "amd64")
	_, push := loopbackRegistry(t)
	ref := push("wc:1", testfn.Image(t, "amd64", map[string][]byte{"wordcount": bin}, nil, "/wordcount"))
	store, err := deploy.New(deploy.Config{Dir: t.TempDir(), Resolver: &oci.Resolver{Insecure: []string{"127.0.0.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "openfaas.json")
	h, _ := newSimHarness(t, 1, 0, orchestrator.Config{Bundles: store}, Config{Deploys: store, Archs: []string{"x86"}, StateFile: file})
	for _, svc := range []string{"kept", "lost"} {
		if res, b := h.call("POST", "/system/functions", types.FunctionDeployment{Service: svc, Image: ref,
			Labels: &map[string]string{"a": "b"}}); res.StatusCode != 202 {
			t.Fatalf("deploy %s: %d %s", svc, res.StatusCode, b)
		}
	}
	// The store loses one (mforch deploy --delete while the provider is down).
	if err := store.Delete("lost"); err != nil {
		t.Fatal(err)
	}
	p2, err := New(Config{Orchestrator: h.orch, Deploys: store, Archs: []string{"x86"}, StateFile: file})
	if err != nil {
		t.Fatal(err)
	}
	fn, ok := p2.lookup("kept")
	if !ok || fn.target != (target{Function: "kept", User: true, Deployed: true}) || (*fn.Deployment.Labels)["a"] != "b" || fn.Deployment.Image != ref {
		t.Errorf("kept after restart: %+v %v", fn, ok)
	}
	if fn, ok := p2.lookup("lost"); ok {
		t.Errorf("lost after restart: %+v; want it dropped with its bundle", fn)
	}
}
