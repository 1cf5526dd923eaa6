package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/testsvc"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/runtime/functions"
	"github.com/microfaas/microfaas/target"
)

// guestView rewrites a service's loopback address to the host as a QEMU
// user-networking guest sees it (10.0.2.2).
func guestView(s map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range s {
		out[k] = strings.ReplaceAll(v, "127.0.0.1", "10.0.2.2")
	}
	return out
}

// TestQEMUWorkerEndToEnd boots a real x86 worker carrying user functions (a
// static Go binary, a shell script and a container image pulled from a
// registry) and runs them, the Redis and PostgreSQL functions against real
// servers on the host, and bad jobs, through the real orchestrator.
func TestQEMUWorkerEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	ctx := context.Background()
	redis := testsvc.Redis(t)
	pg := testsvc.Postgres(t)
	dsn, err := functions.PostgresDSN(pg)
	if err != nil {
		t.Fatal(err)
	}
	if err := functions.SeedPostgres(ctx, dsn); err != nil {
		t.Fatal(err)
	}

	// User functions: a Go binary, a script, and an image in a registry.
	dir := t.TempDir()
	wc := filepath.Join(dir, "wordcount")
	os.WriteFile(wc, buildWordcount(t, "amd64"), 0o755)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/fn/wc:1"
	r, _ := name.ParseReference(ref)
	img := makeImage(t, "amd64", map[string][]byte{"app/wordcount": buildWordcount(t, "amd64")}, nil, "/app/wordcount")
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	o := builder.Options{RepoDir: repo(t), Arch: target.X86, Cache: cache.Cache{Dir: cache.DefaultDir()},
		Functions: map[string]string{"wordcount": wc, "hello": filepath.Join(repo(t), "examples/functions/hello.sh"), "wcimage": "oci:" + ref}}
	if _, err := os.Stat(builder.BusyboxPath); err != nil && os.Getenv("CI") == "" {
		delete(o.Functions, "hello")
	}
	w, err := builder.BuildWorker(ctx, o, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	cl := cluster.Local(1)
	cl.Services = map[string]map[string]string{"redis": guestView(redis), "postgres": guestView(pg)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl.Network.Port = ln.Addr().(*net.TCPAddr).Port
	q, err := power.NewQEMU(ctx, power.QEMUConfig{Kernel: w.Kernel, Initrd: w.Initramfs, Cluster: cl, LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	orch, err := orchestrator.New(orchestrator.Config{Cluster: cl,
		Controllers: map[string]power.Controller{cluster.KindVM: q}, IdleTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer orch.Close()
	go orch.Serve(ln)

	tests := []struct {
		fn, args string
		want     string // substring of the JSON result
		wantErr  string
	}{
		{"redis_insert", `{"id":"1234567","balance":"250"}`, `250`, ""},
		{"redis_modify", `{"id":"Jenny","spend":40}`, ``, ""},
		{"psql_inventory", `{}`, `in stock`, ""},
		{"psql_purchase", `{"id":7}`, ``, ""},
		{"psql_purchase", `{"id":999}`, ``, "999"},
		{"wordcount", `"a b c\n"`, `{\"bytes\":6,\"lines\":1,\"words\":3}`, ""},
		{"wcimage", `"one two"`, `\"words\":2`, ""},
		{"hello", `"QEMU\n"`, `Hello, QEMU!`, ""},
		{"hello", `""`, ``, "empty request"},
		{"matmul", `{"A":[[1,2],[3,4]],"B":[[1]]}`, ``, "B"},
	}
	for _, tt := range tests {
		if _, ok := o.Functions[tt.fn]; !ok && tt.fn == "hello" {
			continue
		}
		inv, err := orch.Invoke(ctx, tt.fn, json.RawMessage(tt.args), 60*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if tt.wantErr != "" {
			if inv.Err == nil || !errors.Is(inv.Err, orchestrator.ErrFunction) || !strings.Contains(inv.Err.Error(), tt.wantErr) {
				t.Errorf("%s %s: err %v, want %q (result %s)", tt.fn, tt.args, inv.Err, tt.wantErr, inv.Result)
			}
			continue
		}
		if inv.Err != nil || !strings.Contains(string(inv.Result), tt.want) {
			t.Errorf("%s %s: result %s err %v, want %q", tt.fn, tt.args, inv.Result, inv.Err, tt.want)
		}
		t.Logf("%s on %s: %.1f ms: %.120s", tt.fn, inv.Worker, inv.ExecMS, inv.Result)
	}
	// A function the worker does not have is refused at submit, once its
	// hello said what it has: no worker boots for it.
	if _, err := orch.Invoke(ctx, "no_such_function", json.RawMessage(`{}`), time.Minute); !errors.Is(err, orchestrator.ErrUnknownFunction) {
		t.Errorf("no_such_function: err %v, want ErrUnknownFunction", err)
	}
	if t.Failed() {
		if b, err := os.ReadFile(q.LogPath("vm0")); err == nil {
			t.Logf("worker console:\n%s", b)
		}
	}
}
