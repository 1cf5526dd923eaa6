package natsq

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/openfaas"
)

// send makes one request with If-Match etag ("" for none) and returns the
// status, body and ETag.
func send(h http.Handler, method, path, body, etag string) (int, string, string) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if etag != "" {
		req.Header.Set("If-Match", etag)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String(), rec.Header().Get("ETag")
}

// race sends one request through each of hs at once and returns their
// statuses.
func race(hs []http.Handler, reqs []func(h http.Handler) int) []int {
	codes := make([]int, len(hs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes[i] = reqs[i](h)
		}()
	}
	close(start)
	wg.Wait()
	return codes
}

// Two instances create the same function or secret at once, rounds times:
// exactly one is created, the other answers 409 saying to update instead,
// and both end with the winner's value.
func TestConcurrentCreates(t *testing.T) {
	hs, sts := sharedInstances(t, 2)
	const rounds = 10
	for _, tc := range []struct {
		kind, path string
		created    int
		body       func(name string, by int) string
		key        func(name string) string
		has        func(h http.Handler, name string) bool
	}{
		{"function", "/system/functions", http.StatusAccepted,
			func(name string, by int) string {
				return fmt.Sprintf(`{"service":%q,"image":"microfaas/test_nap","envVars":{"by":"%d"}}`, name, by)
			},
			func(name string) string { return "fn." + name },
			func(h http.Handler, name string) bool {
				code, _ := call(h, "GET", "/system/function/"+name, "")
				return code == http.StatusOK
			}},
		{"secret", "/system/secrets", http.StatusCreated,
			func(name string, by int) string { return fmt.Sprintf(`{"name":%q,"value":"by%d"}`, name, by) },
			func(name string) string { return "secret." + name },
			func(h http.Handler, name string) bool {
				_, body := call(h, "GET", "/system/secrets", "")
				return strings.Contains(body, fmt.Sprintf("%q", name))
			}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			won := make([]int, 2)
			for r := range rounds {
				name := fmt.Sprintf("%s%d", tc.kind, r)
				bodies := make([]string, 2)
				codes := race(hs, []func(http.Handler) int{
					func(h http.Handler) int {
						code, body, _ := send(h, "POST", tc.path, tc.body(name, 0), "")
						bodies[0] = body
						return code
					},
					func(h http.Handler) int {
						code, body, _ := send(h, "POST", tc.path, tc.body(name, 1), "")
						bodies[1] = body
						return code
					},
				})
				winner := -1
				for i, code := range codes {
					switch code {
					case tc.created:
						if winner >= 0 {
							t.Fatalf("round %d: both instances created %s: %v", r, name, codes)
						}
						winner = i
					case http.StatusConflict:
						if !strings.Contains(bodies[i], "already exists") || !strings.Contains(bodies[i], "PUT") {
							t.Errorf("round %d: the 409 does not say to update with PUT: %s", r, bodies[i])
						}
					default:
						t.Fatalf("round %d, instance %d: %d %s; want %d or 409", r, i, code, bodies[i], tc.created)
					}
				}
				if winner < 0 {
					t.Fatalf("round %d: neither instance created %s: %v %v", r, name, codes, bodies)
				}
				won[winner]++
				v, _, err := sts[0].Get(context.Background(), tc.key(name))
				if err != nil || !strings.Contains(string(v), fmt.Sprintf("by%d", winner)) && !strings.Contains(string(v), fmt.Sprintf(`"by":"%d"`, winner)) {
					t.Fatalf("round %d: shared %s is %s (%v); want the winner's (instance %d)", r, name, v, err, winner)
				}
				for i, h := range hs {
					eventually(t, fmt.Sprintf("instance %d has %s", i, name), func() bool { return tc.has(h, name) })
				}
			}
			t.Logf("%d races: creations won by instance 0, 1: %v; every loser answered 409", rounds, won)
		})
	}
}

// An update through one instance and a removal through the other at once,
// rounds times: a removal that succeeds is never undone (an update after
// it answers 404, not bringing the function back); a removal that fails
// (409: the function changed under it) leaves the updated function.
func TestUpdateRemoveRace(t *testing.T) {
	hs, sts := sharedInstances(t, 2)
	const rounds = 10
	outcomes := map[string]int{}
	for r := range rounds {
		name := fmt.Sprintf("racer%d", r)
		if code, body := call(hs[0], "POST", "/system/functions", fmt.Sprintf(`{"service":%q,"image":"microfaas/test_nap"}`, name)); code != http.StatusAccepted {
			t.Fatalf("deploy %s: %d %s", name, code, body)
		}
		eventually(t, "instance 1 has "+name, func() bool {
			code, _ := call(hs[1], "GET", "/system/function/"+name, "")
			return code == http.StatusOK
		})
		update := fmt.Sprintf(`{"service":%q,"image":"microfaas/test_nap","envVars":{"round":"%d"}}`, name, r)
		// Every other removal is of the revision read before the race
		// (If-Match): an update first makes it fail.
		var delMatch string
		if r%2 == 1 {
			_, delMatch = read(t, hs[1], name)
		}
		var bodies [2]string
		codes := race(hs, []func(http.Handler) int{
			func(h http.Handler) int {
				code, body, _ := send(h, "PUT", "/system/functions", update, "")
				bodies[0] = body
				return code
			},
			func(h http.Handler) int {
				code, body, _ := send(h, "DELETE", "/system/functions", fmt.Sprintf(`{"functionName":%q}`, name), delMatch)
				bodies[1] = body
				return code
			},
		})
		put, del := codes[0], codes[1]
		outcomes[fmt.Sprintf("PUT %d, DELETE%s %d", put, map[bool]string{true: " with If-Match"}[delMatch != ""], del)]++
		v, _, err := sts[1].Get(context.Background(), "fn."+name)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case del == http.StatusAccepted && (put == http.StatusAccepted || put == http.StatusNotFound):
			// The update came first, or after the removal and found nothing.
			if v != nil {
				t.Fatalf("round %d: removed (PUT %d %s) and back in the shared state: %s", r, put, bodies[0], v)
			}
			for i, h := range hs {
				eventually(t, fmt.Sprintf("instance %d no longer has %s", i, name), func() bool {
					code, _ := call(h, "GET", "/system/function/"+name, "")
					return code == http.StatusNotFound
				})
			}
			if put == http.StatusNotFound && !strings.Contains(bodies[0], "POST /system/functions") {
				t.Errorf("round %d: the 404 of an update after a removal does not say what to do: %s", r, bodies[0])
			}
		case del == http.StatusConflict && put == http.StatusAccepted:
			if !strings.Contains(string(v), fmt.Sprintf(`"round":"%d"`, r)) {
				t.Fatalf("round %d: removal refused, and the shared function is not the update: %s", r, v)
			}
			if !strings.Contains(bodies[1], "DELETE again") {
				t.Errorf("round %d: the 409 of the removal does not say what to do: %s", r, bodies[1])
			}
		default:
			t.Fatalf("round %d: PUT %d %s, DELETE %d %s", r, put, bodies[0], del, bodies[1])
		}
		// The losing instance has caught up before the next round.
		for i, h := range hs {
			want := http.StatusOK
			if v == nil {
				want = http.StatusNotFound
			}
			eventually(t, fmt.Sprintf("instance %d agrees on %s", i, name), func() bool {
				code, _ := call(h, "GET", "/system/function/"+name, "")
				return code == want
			})
		}
	}
	t.Logf("%d races of an update and a removal: %v", rounds, outcomes)

	// In sequence, with ETags: a removal makes an earlier read stale, and
	// a removal with a stale ETag is refused.
	if code, body := call(hs[0], "POST", "/system/functions", `{"service":"seq","image":"microfaas/test_nap"}`); code != http.StatusAccepted {
		t.Fatalf("deploy seq: %d %s", code, body)
	}
	eventually(t, "instance 1 has seq", func() bool { code, _ := call(hs[1], "GET", "/system/function/seq", ""); return code == http.StatusOK })
	_, stale := read(t, hs[0], "seq")
	if code, body, _ := send(hs[1], "PUT", "/system/functions", `{"service":"seq","image":"microfaas/test_nap","envVars":{"v":"2"}}`, ""); code != http.StatusAccepted {
		t.Fatalf("update seq: %d %s", code, body)
	}
	if code, body, _ := send(hs[0], "DELETE", "/system/functions", `{"functionName":"seq"}`, stale); code != http.StatusConflict || !strings.Contains(body, "GET /system/function/seq again") {
		t.Fatalf("DELETE with a stale ETag: %d %s; want 409 saying to read again", code, body)
	}
	_, fresh := read(t, hs[1], "seq")
	if code, body, _ := send(hs[1], "DELETE", "/system/functions", `{"functionName":"seq"}`, fresh); code != http.StatusAccepted {
		t.Fatalf("DELETE with the current ETag: %d %s", code, body)
	}
	if code, body, _ := send(hs[0], "PUT", "/system/functions", `{"service":"seq","image":"microfaas/test_nap"}`, fresh); code == http.StatusAccepted {
		t.Fatalf("PUT with the ETag of a removed function: %d %s; want it refused", code, body)
	}
	if v, _, _ := sts[0].Get(context.Background(), "fn.seq"); v != nil {
		t.Fatalf("seq is back after its removal: %s", v)
	}
}

// A secret's ETag (from its POST or PUT) made stale by another instance's
// change is refused (409) on PUT and DELETE; a current one is accepted,
// and nothing changes a removed secret.
func TestSecretIfMatch(t *testing.T) {
	hs, sts := sharedInstances(t, 2)
	etags := map[string]string{}
	for _, step := range []struct {
		what       string
		by         int
		method     string
		value      string
		ifMatch    string // a name in etags
		want       int
		saveAs     string
		bodyHas    string
		wantShared string // in the shared value afterwards; "-": none
	}{
		{"create", 0, "POST", "one", "", http.StatusCreated, "first", "", "one"},
		{"create again through the other instance", 1, "POST", "uno", "", http.StatusConflict, "", "already exists", "one"},
		{"plain update through the other instance", 1, "PUT", "two", "", http.StatusAccepted, "second", "", "two"},
		{"update with the stale ETag", 0, "PUT", "three", "first", http.StatusConflict, "", "changed by another request", "two"},
		{"update with the current ETag", 0, "PUT", "three", "second", http.StatusAccepted, "third", "", "three"},
		{"removal with a stale ETag", 1, "DELETE", "", "second", http.StatusConflict, "", "changed by another request", "three"},
		{"removal with the current ETag", 1, "DELETE", "", "third", http.StatusAccepted, "", "", "-"},
		{"update with the ETag of the removed secret", 0, "PUT", "four", "third", http.StatusNotFound, "", "create it with POST", "-"},
		{"a malformed If-Match", 0, "POST", "five", "bad", http.StatusBadRequest, "", "want an ETag", "-"},
	} {
		etag := etags[step.ifMatch]
		if step.ifMatch == "bad" {
			etag = "not-a-revision"
		}
		body := fmt.Sprintf(`{"name":"token","value":%q}`, step.value)
		if step.method == "DELETE" {
			body = `{"name":"token"}`
		}
		// The instance has caught up with the previous step's change (a
		// lagging one answers from its own copy before the shared state).
		code, resp, tag := send(hs[step.by], step.method, "/system/secrets", body, etag)
		if code != step.want || !strings.Contains(resp, step.bodyHas) {
			t.Fatalf("%s: %d %q; want %d with %q", step.what, code, resp, step.want, step.bodyHas)
		}
		if step.saveAs != "" {
			if tag == "" {
				t.Fatalf("%s: no ETag", step.what)
			}
			etags[step.saveAs] = tag
		}
		v, _, err := sts[0].Get(context.Background(), "secret.token")
		if err != nil {
			t.Fatal(err)
		}
		if step.wantShared == "-" && v != nil || step.wantShared != "-" && !strings.Contains(string(v), fmt.Sprintf("%q", step.wantShared)) {
			t.Fatalf("%s: shared secret %s; want %q", step.what, v, step.wantShared)
		}
		for i, h := range hs {
			eventually(t, fmt.Sprintf("%s: instance %d caught up", step.what, i), func() bool {
				_, list := call(h, "GET", "/system/secrets", "")
				return strings.Contains(list, `"token"`) == (step.wantShared != "-")
			})
		}
	}
}

// A function and a secret that only this instance has (from its
// --openfaas-state file, written before --queue) are not taken for ones
// another instance removed: a PUT shares them, a DELETE removes them.
func TestLocalOnlyStateShared(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	in := newInstance(t, "mforch0", ns.url(), keyFile(t), instanceConfig{workers: 1, idle: time.Hour})
	st, err := in.q.State(context.Background(), "microfaas_openfaas")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "openfaas.json")
	if err := os.WriteFile(file, []byte(`{"functions":[{"deployment":{"service":"old","image":"microfaas/test_nap"}}],"secrets":[{"name":"key","value":"v"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := openfaas.New(openfaas.Config{Orchestrator: in.orch, Shared: st, StateFile: file})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	h := p.Handler()
	for _, step := range []struct {
		method, path, body string
		want               int
		key                string
		shared             bool
	}{
		{"PUT", "/system/functions", `{"service":"old","image":"microfaas/test_nap","envVars":{"v":"2"}}`, http.StatusAccepted, "fn.old", true},
		{"DELETE", "/system/secrets", `{"name":"key"}`, http.StatusAccepted, "secret.key", false},
		{"DELETE", "/system/functions", `{"functionName":"old"}`, http.StatusAccepted, "fn.old", false},
	} {
		if code, body, _ := send(h, step.method, step.path, step.body, ""); code != step.want {
			t.Fatalf("%s %s: %d %s; want %d", step.method, step.body, code, body, step.want)
		}
		v, _, err := st.Get(context.Background(), step.key)
		if err != nil || (v != nil) != step.shared {
			t.Fatalf("%s %s: shared %s is %s (%v); want shared: %v", step.method, step.body, step.key, v, err, step.shared)
		}
	}
}
