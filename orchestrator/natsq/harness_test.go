package natsq

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/testlog"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/simworker"
	"github.com/microfaas/microfaas/runtime/functions"
)

// The tests run a real NATS server (the nats-server module, in this
// process, JetStream on file storage in a temporary folder) and several
// orchestrators in this process, each with its own in-process workers
// (simworker: the real worker runtime over loopback TCP).

// runs counts executions of test_nap per key, across every instance.
var runs sync.Map // key -> *int64 (guarded by runsMu)
var runsMu sync.Mutex

func init() {
	// test_nap sleeps ms milliseconds (or until its deadline) and returns
	// k; each run is counted.
	functions.Register("test_nap", func(ctx context.Context, _ functions.Env, args json.RawMessage) (any, error) {
		var a struct {
			K  string `json:"k"`
			MS int    `json:"ms"`
		}
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, err
		}
		runsMu.Lock()
		n, _ := runs.LoadOrStore(a.K, new(int))
		*n.(*int)++
		runsMu.Unlock()
		if onRun != nil {
			onRun(a.K)
		}
		select {
		case <-time.After(time.Duration(a.MS) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return a.K, nil
	})
}

// onRun, if set, is told of every run (a child process reports them).
var onRun func(k string)

func runCount(k string) int {
	runsMu.Lock()
	defer runsMu.Unlock()
	if n, ok := runs.Load(k); ok {
		return *n.(*int)
	}
	return 0
}

// natsServer is a JetStream server with its store in dir.
type natsServer struct {
	srv  *server.Server
	dir  string
	port int
}

func startNATS(t testing.TB, dir string, port int) *natsServer {
	t.Helper()
	if port == 0 {
		port = -1 // any free port
	}
	return startNATSOpts(t, &server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
}

func startNATSOpts(t testing.TB, opts *server.Options) *natsServer {
	t.Helper()
	dir := opts.StoreDir
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	ns := &natsServer{srv: srv, dir: dir, port: srv.Addr().(*net.TCPAddr).Port}
	t.Cleanup(func() { ns.srv.Shutdown(); ns.srv.WaitForShutdown() })
	return ns
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// restart stops the server and starts it again on the same port and store.
func (n *natsServer) stop() { n.srv.Shutdown(); n.srv.WaitForShutdown() }

func (n *natsServer) start(t testing.TB) {
	n2 := startNATS(t, n.dir, n.port)
	n.srv = n2.srv
}

// instance is one mforch: an orchestrator, its workers and its queue.
type instance struct {
	name string
	orch *orchestrator.Orchestrator
	q    *Queue
	sim  *simworker.Controller
	ln   net.Listener
	logs *testlog.Buffer
	dead bool
}

type instanceConfig struct {
	workers     int
	ackWait     time.Duration
	maxAttempts int
	idle        time.Duration
	quiet       bool // discard logs (benchmarks)
	// functionsDir holds the user functions this instance's workers run
	// (simworker.Controller.FunctionsDir).
	functionsDir string
	// functionsDirs overrides functionsDir per worker id (vm0, vm1, ...).
	functionsDirs map[string]string
	bootDelay     time.Duration // simworker.Controller.BootDelay
}

func newInstance(t testing.TB, name, url, keyFile string, c instanceConfig) *instance {
	t.Helper()
	return newInstanceOpts(t, name, Options{URLs: url, KeyFile: keyFile, AckWait: c.ackWait, PublishTimeout: time.Second}, c)
}

func newInstanceOpts(t testing.TB, name string, qo Options, c instanceConfig) *instance {
	t.Helper()
	logs := &testlog.Buffer{}
	var log *slog.Logger
	if c.quiet {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	} else {
		log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("instance", name)
	}
	qo.Name, qo.Log = name, log
	q, err := Open(context.Background(), qo)
	if err != nil {
		t.Fatal(err)
	}
	cl := cluster.Local(c.workers)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sim := &simworker.Controller{Orch: ln.Addr().String(), Secret: cl.SecretBytes(), FunctionsDir: c.functionsDir, FunctionsDirs: c.functionsDirs,
		BootDelay: c.bootDelay}
	o, err := orchestrator.New(orchestrator.Config{Cluster: cl, Controllers: map[string]power.Controller{cluster.KindVM: sim},
		Queue: q, IdleTimeout: c.idle, MaxAttempts: c.maxAttempts, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	go o.Serve(ln)
	in := &instance{name: name, orch: o, q: q, sim: sim, ln: ln, logs: logs}
	t.Cleanup(func() {
		if !in.dead {
			in.close()
		}
		if t.Failed() && !c.quiet {
			t.Logf("%s log:\n%s", name, logs.String())
		}
	})
	return in
}

// close shuts the instance down in order.
func (in *instance) close() {
	in.orch.Close()
	in.q.Close()
	in.ln.Close()
	in.sim.Wait()
	in.dead = true
}

// kill stops the instance as a crash would: its NATS connection drops
// first (nothing acknowledged or given back), then its orchestrator and
// workers stop.
func (in *instance) kill() {
	in.q.Kill()
	in.orch.Close()
	in.ln.Close()
	in.sim.Wait()
	in.dead = true
}

func keyFile(t testing.TB) string { return filepath.Join(t.TempDir(), "queue.key") }

func napArgs(k string, ms int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"k":%q,"ms":%d}`, k, ms))
}
