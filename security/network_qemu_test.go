package security

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/power"
)

var (
	probeOnce sync.Once
	probeImg  builder.BootFiles
	probeErr  error
)

// probeWorker builds the x86 worker with the netprobe function; the
// kernel comes from the cache, as attackWorker's.
func probeWorker(t *testing.T) builder.BootFiles {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a worker and boots QEMU")
	}
	if err := kernelCached(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	probeOnce.Do(func() {
		repo, err := builder.FindRepo(".")
		if err != nil {
			probeErr = err
			return
		}
		dir, err := os.MkdirTemp("", "mf-security-net-")
		if err != nil {
			probeErr = err
			return
		}
		bin := filepath.Join(dir, "netprobe")
		build := exec.Command("go", "build", "-trimpath", "-o", bin, "./security/testdata/netprobe")
		build.Dir = repo
		build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := build.CombinedOutput(); err != nil {
			probeErr = fmt.Errorf("building netprobe: %w\n%s", err, out)
			return
		}
		probeImg, probeErr = builder.BuildWorker(context.Background(), builder.Options{RepoDir: repo,
			Cache: cache.Cache{Dir: cache.DefaultDir()}, Functions: map[string]string{"netprobe": bin}},
			filepath.Join(dir, "worker"))
	})
	if probeErr != nil {
		t.Fatal(probeErr)
	}
	return probeImg
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
// connection. Meanwhile the worker connects (the invocation runs) and a
// service the cluster names at the host's address answers. Run twice,
// booted in full and from a snapshot (its saved VM has no forward; the
// restore adds them).
func TestQEMUFunctionNetwork(t *testing.T) {
	w := probeWorker(t)
	for _, boot := range []string{power.BootFull, power.BootSnapshot} {
		t.Run(boot, func(t *testing.T) {
			cl := cluster.Local(1)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			cl.Network.Port = ln.Addr().(*net.TCPAddr).Port
			apiPort, apiConns := banner(t, "MFORCH-API")
			svcPort, svcConns := banner(t, "NAMED-SERVICE")
			host := cl.Network.Gateway // the host as guests see it: 10.0.2.2
			cl.Services = map[string]map[string]string{"echo": {"addr": fmt.Sprintf("%s:%d", host, svcPort)}}

			var logs strings.Builder
			var logMu sync.Mutex
			log := slog.New(slog.NewTextHandler(lockedWriter{&logs, &logMu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
			q, err := power.NewQEMU(context.Background(), power.QEMUConfig{Kernel: w.Kernel, Initrd: w.Initramfs,
				Cluster: cl, LogDir: t.TempDir(), Log: log, Boot: boot, SnapshotDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			o, err := orchestrator.New(orchestrator.Config{Cluster: cl, Log: log,
				Controllers: map[string]power.Controller{cluster.KindVM: q}})
			if err != nil {
				t.Fatal(err)
			}
			go o.Serve(ln)
			defer func() {
				o.Close()
				q.Close()
				if t.Failed() {
					logMu.Lock()
					t.Logf("orchestrator log:\n%s", logs.String())
					logMu.Unlock()
					if b, err := os.ReadFile(q.LogPath("vm0")); err == nil {
						t.Logf("worker console:\n%s", b)
					}
				}
			}()
			api := func(h string) string { return net.JoinHostPort(h, fmt.Sprint(apiPort)) }
			named := net.JoinHostPort(host, fmt.Sprint(svcPort))
			// 10.0.2.254 is slirp's own address now, 10.0.2.3 its DNS,
			// fec0::2 the host over IPv6 (off).
			forbidden := []string{api(host), api("10.0.2.254"), api("10.0.2.3"), api("fec0::2"), api("127.0.0.1")}
			args, _ := json.Marshal(map[string]any{"dial": append(forbidden, named), "timeout_ms": 2000})
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			inv, err := o.InvokeJob(ctx, orchestrator.JobSpec{Function: "netprobe", Args: args, Timeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
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
			if n := apiConns.Load(); n != 0 {
				t.Errorf("the unnamed host port saw %d connections from the worker", n)
			}
			if !strings.HasPrefix(res[named], "ok: NAMED-SERVICE") || svcConns.Load() == 0 {
				t.Errorf("the service the cluster names did not answer: %q", res[named])
			}
		})
	}
}
