package natsq

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openfaas/faas-provider/types"

	"github.com/microfaas/microfaas/orchestrator/openfaas"
)

// sharedProviders are n instances' OpenFaaS providers on one bucket.
func sharedProviders(t *testing.T, n int) []http.Handler {
	t.Helper()
	hs, _ := sharedInstances(t, n)
	return hs
}

// sharedInstances are n instances' OpenFaaS providers on one bucket, and
// each one's view of the bucket.
func sharedInstances(t *testing.T, n int) ([]http.Handler, []*State) {
	t.Helper()
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	var hs []http.Handler
	var sts []*State
	for i := 0; i < n; i++ {
		in := newInstance(t, fmt.Sprintf("mforch%d", i), ns.url(), key, instanceConfig{workers: 1, idle: time.Hour})
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
		sts = append(sts, st)
	}
	return hs, sts
}

// read is a function's deployment and ETag as GET /system/function/NAME
// answers them.
func read(t *testing.T, h http.Handler, name string) (types.FunctionStatus, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/system/function/"+name, nil))
	var st types.FunctionStatus
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &st) != nil {
		t.Fatalf("GET %s: %d %s", name, rec.Code, rec.Body)
	}
	return st, rec.Header().Get("ETag")
}

// put updates a function with If-Match etag ("" for none).
func put(h http.Handler, d types.FunctionDeployment, etag string) (int, string) {
	b, _ := json.Marshal(d)
	req := httptest.NewRequest("PUT", "/system/functions", strings.NewReader(string(b)))
	if etag != "" {
		req.Header.Set("If-Match", etag)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func deployment(st types.FunctionStatus) types.FunctionDeployment {
	env := map[string]string{}
	for k, v := range st.EnvVars {
		env[k] = v
	}
	return types.FunctionDeployment{Service: st.Name, Image: st.Image, EnvVars: env}
}

// Two instances edit one function at once, each its own environment
// variable, read-modify-write with If-Match: an update based on a stale
// read gets 409 and is retried on a fresh read, so neither instance's last
// change is lost. A PUT with an ETag the other instance made stale is
// refused with a message saying what to do.
func TestConcurrentFunctionUpdates(t *testing.T) {
	hs := sharedProviders(t, 2)
	if code, body := call(hs[0], "POST", "/system/functions", `{"service":"nap","image":"microfaas/test_nap"}`); code != http.StatusAccepted {
		t.Fatalf("deploy: %d %s", code, body)
	}
	eventually(t, "b lists nap", func() bool {
		code, _ := call(hs[1], "GET", "/system/function/nap", "")
		return code == http.StatusOK
	})
	// A stale ETag.
	st, etag := read(t, hs[0], "nap")
	if etag == "" {
		t.Fatal("GET /system/function/nap has no ETag")
	}
	d := deployment(st)
	d.EnvVars["first"] = "b"
	if code, body := put(hs[1], d, ""); code != http.StatusAccepted {
		t.Fatalf("plain PUT through b: %d %s", code, body)
	}
	d.EnvVars["first"] = "a"
	code, body := put(hs[0], d, etag)
	if code != http.StatusConflict || !strings.Contains(body, "GET /system/function/nap again") {
		t.Errorf("PUT with a stale ETag: %d %s; want 409 saying to read again", code, body)
	}
	// Both at once, each its own variable.
	const rounds = 15
	var wg sync.WaitGroup
	conflicts := make([]int, 2)
	for i, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			field := fmt.Sprintf("by%d", i)
			for r := 1; r <= rounds; r++ {
				for try := 0; ; try++ {
					if try == 50 {
						t.Errorf("%s round %d: 50 conflicts in a row", field, r)
						return
					}
					st, etag := read(t, h, "nap")
					d := deployment(st)
					d.EnvVars[field] = fmt.Sprint(r)
					code, body := put(h, d, etag)
					if code == http.StatusAccepted {
						break
					}
					if code != http.StatusConflict {
						t.Errorf("%s round %d: %d %s", field, r, code, body)
						return
					}
					conflicts[i]++
					time.Sleep(time.Duration(try) * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	for i, h := range hs {
		eventually(t, fmt.Sprintf("instance %d has both last changes", i), func() bool {
			st, _ := read(t, h, "nap")
			return st.EnvVars["by0"] == fmt.Sprint(rounds) && st.EnvVars["by1"] == fmt.Sprint(rounds) && st.EnvVars["first"] == "b"
		})
	}
	t.Logf("%d rounds each on two instances: conflicts retried %v; no change lost", rounds, conflicts)
}
