package security

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/e2e/qemutest"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/power"
)

// probeWorker is the x86 worker with the netprobe function.
func probeWorker(t *testing.T) builder.BootFiles {
	t.Helper()
	return qemutest.Worker(t, map[string]string{"netprobe": "./security/testdata/netprobe"})
}

// banner serves msg to every connection on a host loopback port and
// counts them.
func banner(t *testing.T, msg string) (port int, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = &atomic.Int64{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			fmt.Fprintln(c, msg)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, conns
}

// TestQEMUFunctionNetwork: issue 18, attack 4 (network half). A function
// on a QEMU worker (user networking) tries the host's loopback ports that
// the cluster does not name (here a stand-in for mforch's HTTP API) at
// every address the host has for guests: each fails, and the port sees no
// connection; nor can it dial the worker port or open the session port.
// Meanwhile the worker connects (the invocation runs) and a service the
// cluster names at the host's address answers. Run twice,
// booted in full and from a snapshot (its saved VM has no forward; the
// restore adds them).
func TestQEMUFunctionNetwork(t *testing.T) {
	w := probeWorker(t)
	for _, boot := range []string{power.BootFull, power.BootSnapshot} {
		t.Run(boot, func(t *testing.T) {
			apiPort, apiConns := banner(t, "MFORCH-API")
			svcPort, svcConns := banner(t, "NAMED-SERVICE")
			var host string // the host as guests see it: 10.0.2.2
			c := qemutest.Start(t, qemutest.Options{Workers: 1, Worker: w,
				QEMU: power.QEMUConfig{Boot: boot, SnapshotDir: t.TempDir()},
				Cluster: func(cl *cluster.Cluster) {
					host = cl.Network.Gateway
					cl.Services = map[string]map[string]string{"echo": {"addr": fmt.Sprintf("%s:%d", host, svcPort)}}
				}})
			api := func(h string) string { return net.JoinHostPort(h, fmt.Sprint(apiPort)) }
			named := net.JoinHostPort(host, fmt.Sprint(svcPort))
			// 10.0.2.254 is slirp's own address now, 10.0.2.3 its DNS,
			// fec0::2 the host over IPv6 (off).
			// And the worker port: the session runs over the worker's
			// virtio-serial port, which the function cannot open either.
			workerPort := net.JoinHostPort(host, fmt.Sprint(c.Cluster.Network.Port))
			forbidden := []string{api(host), api("10.0.2.254"), api("10.0.2.3"), api("fec0::2"), api("127.0.0.1"), workerPort}
			args, _ := json.Marshal(map[string]any{"dial": append(forbidden, named), "open": []string{"/dev/vport0p1"}, "timeout_ms": 2000})
			inv := c.Invoke(t, orchestrator.JobSpec{Function: "netprobe", Args: args, Timeout: time.Minute})
			if inv.Err != nil {
				t.Fatalf("the worker did not run the probe: %v", inv.Err)
			}
			var out string
			var res map[string]string
			if err := json.Unmarshal(inv.Result, &out); err != nil || json.Unmarshal([]byte(out), &res) != nil {
				t.Fatalf("netprobe result %s", inv.Result)
			}
			t.Logf("from the function: %v", res)
			for _, a := range forbidden {
				if !strings.HasPrefix(res[a], "ERR") {
					t.Errorf("the function reached %s, a host port the cluster does not name: %q", a, res[a])
				}
			}
			if !strings.HasPrefix(res["/dev/vport0p1"], "ERR") {
				t.Errorf("the function opened the session port: %q", res["/dev/vport0p1"])
			}
			if n := apiConns.Load(); n != 0 {
				t.Errorf("the unnamed host port saw %d connections from the worker", n)
			}
			if !strings.HasPrefix(res[named], "ok: NAMED-SERVICE") || svcConns.Load() == 0 {
				t.Errorf("the service the cluster names did not answer: %q", res[named])
			}
		})
	}
}

// TestQEMUFunctionSessionPort: the x86 worker's session runs over its
// virtio-serial port (power.SessionPort), and a function cannot use
// either way to the orchestrator: it tries to open the port's device (by
// glob and by the names the kernel gives the first ports) and the port's
// folder in sysfs, and to dial the worker port at the host's address (no
// rule forwards it any more). Each fails, the worker port sees no
// connection, and the worker's session carries the function's result
// back all the same. One full boot.
func TestQEMUFunctionSessionPort(t *testing.T) {
	w := probeWorker(t)
	c := qemutest.Start(t, qemutest.Options{Workers: 1, Worker: w})
	workerPort := net.JoinHostPort(c.Cluster.Network.Gateway, fmt.Sprint(c.Cluster.Network.Port))
	devices := []string{"/dev/vport*", "/dev/vport0p1", "/dev/vport1p1", "/sys/class/virtio-ports/*/name"}
	args, _ := json.Marshal(map[string]any{"dial": []string{workerPort}, "open": devices, "timeout_ms": 2000})
	inv := c.Invoke(t, orchestrator.JobSpec{Function: "netprobe", Args: args, Timeout: time.Minute})
	if inv.Err != nil {
		t.Fatalf("the worker did not run the probe (its session broken?): %v", inv.Err)
	}
	var out string
	var res map[string]string
	if err := json.Unmarshal(inv.Result, &out); err != nil || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("netprobe result %s", inv.Result)
	}
	t.Logf("from the function: %v", res)
	if len(res) < 2 {
		t.Fatalf("the probe reported %d attempts: %v", len(res), res)
	}
	for what, got := range res {
		if !strings.HasPrefix(got, "ERR") {
			t.Errorf("the function got to %s: %q", what, got)
		}
	}
	if !strings.HasPrefix(res[workerPort], "ERR") {
		t.Errorf("no attempt on the worker port %s recorded: %v", workerPort, res)
	}
	logs := c.Logs.String()
	if strings.Contains(logs, "refused worker connection") {
		t.Errorf("the worker port saw a TCP connection:\n%s", logs)
	}
	b, err := os.ReadFile(c.QEMU.LogPath(c.Cluster.Workers[0].ID))
	if err != nil {
		t.Fatal(err)
	}
	if want := `"connected to the orchestrator" addr=vport:` + power.SessionPort; !strings.Contains(string(b), want) {
		t.Errorf("the worker's session did not run over its port (no %q in its console)", want)
	}
}
