package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/microfaas/microfaas/orchestrator"
)

// startNATS runs a JetStream server in this process (the nats-server
// module: the real server) and returns its URL.
func startNATS(t *testing.T) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return fmt.Sprintf("nats://%s", srv.Addr())
}

// mforch serve --queue: an async call is acknowledged once it is in the
// JetStream stream (this instance has no workers: it stays there), any
// instance's GET /invocations/ID finds it queued, and the queue's key
// file is made owner-only in the state folder.
func TestServeQueue(t *testing.T) {
	url := startNATS(t)
	api, state := serveDefaults(t, "--queue", url, "--queue-ack-wait", "2s")
	authDir := filepath.Join(state, "microfaas", "auth")
	user, _ := os.ReadFile(filepath.Join(authDir, "basic-auth-user"))
	pw, _ := os.ReadFile(filepath.Join(authDir, "basic-auth-password"))
	u, p := strings.TrimSpace(string(user)), strings.TrimSpace(string(pw))
	code, body := send(t, "POST", api+"/invoke/float_operations?async=true", u, p, `{"n":1}`)
	if code != http.StatusAccepted {
		t.Fatalf("async invoke: %d %s", code, body)
	}
	var resp orchestrator.InvokeResponse
	if err := json.Unmarshal([]byte(body), &resp); err != nil || resp.ID == "" {
		t.Fatalf("async invoke answer %s: %v", body, err)
	}
	code, body = send(t, "GET", api+"/invocations/"+resp.ID, u, p, "")
	if code != http.StatusAccepted || !strings.Contains(body, `"status":"queued"`) {
		t.Errorf("GET /invocations/%s: %d %s", resp.ID, code, body)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), "MICROFAAS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil || info.State.Msgs != 1 || info.Config.Retention != jetstream.WorkQueuePolicy || info.Config.Storage != jetstream.FileStorage {
		t.Errorf("stream: %+v %v", info, err)
	}
	// The native deploy routes go through the provider's shared path: a
	// built-in image is refused there naming the OpenFaaS route (the
	// Store alone would answer that there is no architecture), and a
	// removal of an unknown function says it is not deployed.
	code, body = send(t, "PUT", api+"/functions/nap", u, p, `{"image":"microfaas/fn:nap"}`, "Content-Type", "application/json")
	if code != http.StatusBadRequest || !strings.Contains(body, "POST /system/functions") {
		t.Errorf("native deploy of a built-in with --queue: %d %s; want 400 from the shared path", code, body)
	}
	code, body = send(t, "DELETE", api+"/functions/nap", u, p, "")
	if code != http.StatusNotFound || !strings.Contains(body, "not deployed") {
		t.Errorf("native delete of an unknown function with --queue: %d %s", code, body)
	}
	key := filepath.Join(state, "microfaas", "queue.key")
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("queue key file %s: %v %v", key, fi, err)
	}
}

// mforch serve refuses --queue with --store, and a NATS server that does
// not answer, saying what to do.
func TestServeQueueRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "nats://" + ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	t.Setenv("XDG_STATE_HOME", dir)
	base := []string{"--workers", "0", "--http", "127.0.0.1:0", "--results", filepath.Join(dir, "r.csv"), "--log-dir", dir}
	err = runServe(context.Background(), append(base, "--queue", startNATS(t), "--store", filepath.Join(dir, "q.db")))
	if err == nil || !strings.Contains(err.Error(), "drop --store") {
		t.Errorf("--queue with --store: %v", err)
	}
	err = runServe(context.Background(), append(base, "--queue", dead))
	if !errors.Is(err, orchestrator.ErrQueueDown) || !strings.Contains(err.Error(), "-js") {
		t.Errorf("--queue with no server: %v", err)
	}
}
