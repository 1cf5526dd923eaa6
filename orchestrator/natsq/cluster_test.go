package natsq

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/microfaas/microfaas/orchestrator"
)

// freePort is a TCP port nothing listens on now.
func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// The three-node configuration docs/scale-out.md shows (configs/nats)
// runs: three servers from those files (ports, addresses and store
// folders moved to this host), mforch instances on a stream and a bucket
// of three replicas, and one server stopped mid-run loses nothing
// acknowledged and stops nothing.
func TestThreeNodeCluster(t *testing.T) {
	const nodes = 3
	var opts []*server.Options
	var routes []*url.URL
	for i := 1; i <= nodes; i++ {
		o, err := server.ProcessConfigFile(filepath.Join("..", "..", "configs", "nats", fmt.Sprintf("nats-%d.conf", i)))
		if err != nil {
			t.Fatal(err)
		}
		if !o.JetStream || !o.SyncAlways || o.Cluster.Name != "microfaas" || len(o.Routes) != nodes || o.ServerName != fmt.Sprintf("nats-%d", i) {
			t.Fatalf("configs/nats/nats-%d.conf: jetstream %v sync always %v cluster %q routes %d name %q",
				i, o.JetStream, o.SyncAlways, o.Cluster.Name, len(o.Routes), o.ServerName)
		}
		o.Host, o.Port, o.HTTPPort = "127.0.0.1", freePort(t), 0
		o.Cluster.Host, o.Cluster.Port = "127.0.0.1", freePort(t)
		o.StoreDir = t.TempDir()
		o.NoLog, o.NoSigs = true, true
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", o.Cluster.Port)})
		opts = append(opts, o)
	}
	var srvs []*server.Server
	var urls []string
	for _, o := range opts {
		o.Routes = routes
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		srvs = append(srvs, s)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	for _, s := range srvs {
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatal("a server did not start")
		}
	}
	// JetStream is ready once the servers elected a meta leader.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ready := false
		for _, s := range srvs {
			if s.JetStreamIsLeader() {
				ready = true
			}
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no JetStream meta leader")
		}
		time.Sleep(50 * time.Millisecond)
	}
	key := keyFile(t)
	all := strings.Join(urls, ",")
	var ins []*instance
	for i := 0; i < 2; i++ {
		ins = append(ins, newInstanceOpts(t, fmt.Sprintf("mforch%d", i), Options{URLs: all, Replicas: 3, KeyFile: key,
			AckWait: 2 * time.Second, PublishTimeout: 2 * time.Second}, instanceConfig{workers: 3, idle: time.Hour}))
	}
	info, err := ins[0].q.stream.Info(context.Background())
	if err != nil || info.Config.Replicas != 3 {
		t.Fatalf("stream: %+v %v", info, err)
	}
	prefix := fmt.Sprintf("cluster-%d", time.Now().UnixNano())
	first := submitAll(t, ins, prefix, 150, 10, 16)
	// Stop the server the first instance is connected to.
	connected := ins[0].q.nc.ConnectedUrl()
	stopped := -1
	for i, u := range urls {
		if u == connected {
			srvs[i].Shutdown()
			stopped = i
		}
	}
	if stopped < 0 {
		t.Fatalf("connected to %s, not one of %v", connected, urls)
	}
	// Submits go on through the two left (after the client moved over).
	for i := 150; i < 300; i++ {
		var inv *orchestrator.Invocation
		var err error
		for try := 0; try < 100; try++ {
			if inv, err = ins[i%2].orch.Submit("test_nap", napArgs(fmt.Sprintf("%s-%d", prefix, i), 10), 10*time.Second); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("submit %d with one server of three down: %v", i, err)
		}
		first = append(first, inv)
	}
	waitAll(t, first, prefix, time.Minute)
	keys := resultKeys(t, ins[1].q)
	for _, inv := range first {
		if !keys[inv.ID] {
			t.Errorf("no stored result for %s", inv.ID)
		}
	}
	t.Logf("300 invocations on a three-node cluster (R3, sync always), server nats-%d stopped after the first 150: all finished", stopped+1)
}
