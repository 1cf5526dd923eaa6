package natsq

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/microfaas/microfaas/bundle/oci"
	"github.com/microfaas/microfaas/internal/testfn"
	"github.com/microfaas/microfaas/orchestrator/deploy"
	"github.com/microfaas/microfaas/orchestrator/openfaas"
)

// nativeCall sends one request to mforch's native deploy routes.
func nativeCall(h http.Handler, method, path, body string) (int, string) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// TestNativeDeploysShared: mforch's native deploy routes (mforch deploy)
// of two instances go through the providers' shared path, as lab/rig
// wires them with --queue: a native deploy on A is pulled by B and listed
// by B's native routes and B's /system/functions; a create racing the
// other instance's create is refused 409 on one of them only; a
// removal landing while A pulls for a native update is not undone (409,
// nothing in the bucket); a native delete on B removes it on A.
func TestNativeDeploysShared(t *testing.T) {
	// A registry whose "slow" repository's manifests wait for release once
	// blocking is set: a pull in progress while another instance removes
	// the function.
	var blocking atomic.Bool
	slowAsked, release := make(chan struct{}, 1), make(chan struct{})
	reg := httptest.NewServer(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if blocking.Load() && strings.HasPrefix(r.URL.Path, "/v2/slow/manifests/") {
				select {
				case slowAsked <- struct{}{}:
				default:
				}
				<-release
			}
			next.ServeHTTP(w, r)
		})
	}(registry.New(registry.Logger(log.New(io.Discard, "", 0)))))
	t.Cleanup(reg.Close)
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	host := strings.TrimPrefix(reg.URL, "http://")
	img := testfn.UpperImage(t, testfn.AMD64)
	ref := func(repoTag string) string {
		testfn.Push(t, host+"/"+repoTag, img)
		return host + "/" + repoTag
	}
	up1, up2, slow := ref("up:1"), ref("up:2"), ref("slow:1")
	blocking.Store(true)

	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	archs := []string{"x86"}
	type inst struct {
		native, provider http.Handler
		store            *deploy.Store
	}
	var ins []inst
	var st *State
	for i := range 2 {
		in := newInstance(t, fmt.Sprintf("mforch%d", i), ns.url(), key, instanceConfig{workers: 1, idle: time.Hour})
		s, err := in.q.State(context.Background(), "microfaas_openfaas")
		if err != nil {
			t.Fatal(err)
		}
		st = s
		lg := slog.New(slog.NewTextHandler(in.logs, nil)).With("instance", in.name)
		store, err := deploy.New(deploy.Config{Dir: t.TempDir(), Resolver: &oci.Resolver{Insecure: []string{"127.0.0.1"}}, Log: lg})
		if err != nil {
			t.Fatal(err)
		}
		p, err := openfaas.New(openfaas.Config{Orchestrator: in.orch, Shared: s, Deploys: store, Archs: archs, Log: lg})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(context.Background()) })
		ins = append(ins, inst{deploy.Handler(p.Native(), archs), p.Handler(), store})
	}
	a, b := ins[0], ins[1]
	lists := func(in inst, name, image string) bool {
		code, body := nativeCall(in.native, "GET", "/functions/"+name, "")
		if code != http.StatusOK || !strings.Contains(body, image) {
			return false
		}
		_, body = call(in.provider, "GET", "/system/functions", "")
		return strings.Contains(body, fmt.Sprintf(`"name":%q`, name)) && strings.Contains(body, image)
	}
	gone := func(in inst, name string) bool {
		code, _ := nativeCall(in.native, "GET", "/functions/"+name, "")
		_, body := call(in.provider, "GET", "/system/functions", "")
		return code == http.StatusNotFound && !strings.Contains(body, fmt.Sprintf(`"name":%q`, name))
	}
	bucket := func(name string) string {
		v, _, err := st.Get(context.Background(), "fn."+name)
		if err != nil {
			t.Fatal(err)
		}
		return string(v)
	}

	// A native deploy on A is everywhere.
	if code, body := nativeCall(a.native, "PUT", "/functions/up", `{"image":"`+up1+`"}`); code != http.StatusOK || !strings.Contains(body, `"x86"`) {
		t.Fatalf("native deploy on A: %d %s", code, body)
	}
	if v := bucket("up"); !strings.Contains(v, up1) {
		t.Fatalf("the bucket's fn.up: %q; want the deployment of %s", v, up1)
	}
	eventually(t, "B lists A's native deploy (native and OpenFaaS routes)", func() bool { return lists(b, "up", up1) })
	if rec, ok := b.store.Get("up"); !ok || rec.Archs["x86"].Bundle.Digest == "" {
		t.Errorf("B's store: %+v %v; want B's own bundle for x86", rec, ok)
	}
	// A native update on B keeps what OpenFaaS set and changes the image.
	if code, body, _ := send(b.provider, "PUT", "/system/functions", `{"service":"up","image":"`+up1+`","envVars":{"team":"a"}}`, ""); code != http.StatusAccepted {
		t.Fatalf("OpenFaaS update on B: %d %s", code, body)
	}
	if code, body := nativeCall(b.native, "PUT", "/functions/up", `{"image":"`+up2+`"}`); code != http.StatusOK {
		t.Fatalf("native update on B: %d %s", code, body)
	}
	if v := bucket("up"); !strings.Contains(v, up2) || !strings.Contains(v, `"team":"a"`) {
		t.Errorf("the bucket's fn.up after a native update: %q; want %s with the environment kept", v, up2)
	}
	eventually(t, "A takes B's native update over", func() bool { return lists(a, "up", up2) })

	// Two creates at once: one wins, on every instance.
	for r := range 3 {
		name := fmt.Sprintf("race%d", r)
		bodies := make([]string, 2)
		images := []string{up1, up2}
		codes := race([]http.Handler{a.native, b.native}, []func(http.Handler) int{
			func(h http.Handler) int {
				c, body := nativeCall(h, "PUT", "/functions/"+name, `{"image":"`+images[0]+`"}`)
				bodies[0] = body
				return c
			},
			func(h http.Handler) int {
				c, body := nativeCall(h, "PUT", "/functions/"+name, `{"image":"`+images[1]+`"}`)
				bodies[1] = body
				return c
			},
		})
		t.Logf("round %d: %v", r, codes)
		won := -1
		for i, c := range codes {
			switch c {
			case http.StatusOK:
				won = i
			case http.StatusConflict:
				if !strings.Contains(bodies[i], "mforch deploy again") {
					t.Errorf("round %d: the 409 does not say what to do: %s", r, bodies[i])
				}
			default:
				t.Fatalf("round %d, instance %d: %d %s", r, i, c, bodies[i])
			}
		}
		// Both may win only one after the other (the second then replaced
		// the first): the bucket says who was last.
		if won < 0 {
			t.Fatalf("round %d: no instance deployed %s: %v %v", r, name, codes, bodies)
		}
		last := images[won]
		if codes[0] == codes[1] && !strings.Contains(bucket(name), last) {
			last = images[1-won]
		}
		if !strings.Contains(bucket(name), last) {
			t.Fatalf("round %d: bucket %q; want %s", r, bucket(name), last)
		}
		for _, in := range ins {
			eventually(t, name+" listed with the bucket's image", func() bool { return lists(in, name, last) })
		}
	}

	// A removal landing while A pulls for an update is not undone.
	done := make(chan struct{})
	var code int
	var body string
	go func() {
		defer close(done)
		code, body = nativeCall(a.native, "PUT", "/functions/up", `{"image":"`+slow+`"}`)
	}()
	<-slowAsked
	if c, body := nativeCall(b.native, "DELETE", "/functions/up", ""); c != http.StatusNoContent {
		t.Fatalf("native delete on B: %d %s", c, body)
	}
	releaseOnce.Do(func() { close(release) })
	<-done
	if code != http.StatusConflict || !strings.Contains(body, "removed") {
		t.Errorf("native update across a removal: %d %s; want 409", code, body)
	}
	if v := bucket("up"); v != "" {
		t.Errorf("the bucket after the removal: %q; want nothing", v)
	}
	for i, in := range ins {
		eventually(t, fmt.Sprintf("instance %d has no up", i), func() bool { return gone(in, "up") })
	}
	if _, ok := a.store.Get("up"); ok {
		t.Error("A's store still has up's bundles")
	}
	if code, body := nativeCall(a.native, "DELETE", "/functions/up", ""); code != http.StatusNotFound || !strings.Contains(body, "not deployed") {
		t.Errorf("a second delete: %d %s; want 404 not deployed", code, body)
	}
	if code, body := nativeCall(a.native, "PUT", "/functions/builtin", `{"image":"microfaas/test_nap"}`); code != http.StatusBadRequest || !strings.Contains(body, "POST /system/functions") {
		t.Errorf("a native deploy of a built-in: %d %s; want 400 naming the OpenFaaS route", code, body)
	}
}
