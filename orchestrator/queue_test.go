package orchestrator

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/protocol"
)

// A queued invocation's secrets and headers travel sealed; its result
// carries neither; another instance's key does not open them.
func TestQueueCodecSeals(t *testing.T) {
	dir := t.TempDir()
	c, err := OpenQueueCodec(filepath.Join(dir, "queue.key"))
	if err != nil {
		t.Fatal(err)
	}
	inv := &Invocation{ID: "0193abc", Function: "f", Args: []byte(`{"a":1}`), Timeout: time.Second, Queued: time.Unix(1, 0),
		Secrets: map[string][]byte{"db": []byte("hunter2-secret")},
		HTTP:    &protocol.HTTPRequest{Method: "POST", Header: map[string][]string{"Authorization": {"Bearer tok-secret"}}}}
	msg, err := c.Encode(inv)
	if err != nil {
		t.Fatal(err)
	}
	for _, clear := range []string{"hunter2-secret", "tok-secret"} {
		if bytes.Contains(msg, []byte(clear)) {
			t.Errorf("queued message holds %q in clear: %s", clear, msg)
		}
	}
	got, err := c.Decode(msg)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Secrets["db"]) != "hunter2-secret" || got.HTTP.Header["Authorization"][0] != "Bearer tok-secret" || got.Function != "f" || doneYet(got) {
		t.Errorf("decoded: %+v", got)
	}
	other, err := OpenQueueCodec(filepath.Join(dir, "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Decode(msg); !errors.Is(err, ErrSecretsSealed) {
		t.Errorf("another key: %v, want ErrSecretsSealed", err)
	}
	inv.Finished, inv.Err, inv.Result = time.Unix(2, 0), newError(ErrTimeout, "slow"), []byte(`"r"`)
	res, err := c.EncodeResult(inv)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(res, []byte("secret")) {
		t.Errorf("result holds a secret: %s", res)
	}
	got, err = other.Decode(res) // nothing sealed: any instance reads it
	if err != nil || !doneYet(got) || !errors.Is(got.Err, ErrTimeout) || string(got.Result) != `"r"` {
		t.Errorf("decoded result: %+v %v", got, err)
	}
}

// A queued invocation's callback (an async call's X-Callback-Url, which
// may hold a token) travels sealed, bound to its invocation id; a result
// does not carry it.
func TestQueueCodecSealsCallback(t *testing.T) {
	dir := t.TempDir()
	c, err := OpenQueueCodec(filepath.Join(dir, "queue.key"))
	if err != nil {
		t.Fatal(err)
	}
	inv := &Invocation{ID: "0193cb", Function: "f", Queued: time.Unix(1, 0), Callback: []byte(`{"url":"http://gw/cb?token=cb-secret"}`)}
	msg, err := c.Encode(inv)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(msg, []byte("cb-secret")) {
		t.Errorf("queued message holds the callback in clear: %s", msg)
	}
	got, err := c.Decode(msg)
	if err != nil || string(got.Callback) != string(inv.Callback) {
		t.Fatalf("decoded callback: %q %v", got.Callback, err)
	}
	other, err := OpenQueueCodec(filepath.Join(dir, "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Decode(msg); !errors.Is(err, ErrSecretsSealed) {
		t.Errorf("another key: %v, want ErrSecretsSealed", err)
	}
	// Sealed for one id, it does not open under another.
	moved := bytes.Replace(msg, []byte(`"id":"0193cb"`), []byte(`"id":"0193cc"`), 1)
	if _, err := c.Decode(moved); !errors.Is(err, ErrSecretsSealed) {
		t.Errorf("callback moved to another id: %v, want ErrSecretsSealed", err)
	}
	inv.Finished, inv.Result = time.Unix(2, 0), []byte(`"r"`)
	res, err := c.EncodeResult(inv)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Decode(res); err != nil || got.Callback != nil || bytes.Contains(res, []byte("callback")) {
		t.Errorf("result: %s, callback %q, %v", res, got.Callback, err)
	}
}

// Without a shared queue a caller-chosen id is refused, saying why.
func TestInvocationIDNeedsSharedQueue(t *testing.T) {
	h := newHarness(t, 1, Config{})
	_, err := h.orch.SubmitJob(JobSpec{ID: "mine", Function: "float_operations"})
	if !errors.Is(err, ErrBadID) || !strings.Contains(err.Error(), "--queue") {
		t.Errorf("id without a shared queue: %v", err)
	}
	req := httptest.NewRequest("POST", "/invoke/float_operations", strings.NewReader(`{"n":1}`))
	req.Header.Set("X-Invocation-Id", "mine")
	rec := httptest.NewRecorder()
	h.orch.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest {
		t.Errorf("HTTP with X-Invocation-Id and no shared queue: %d %s", rec.Code, rec.Body)
	}
}
