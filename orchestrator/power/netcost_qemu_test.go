package power_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/e2e/qemutest"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/protocol"
)

// BenchmarkUserNetCost measures what restricted user networking (issue 18:
// restrict=on) costs a cold start, and what the virtio-serial session port
// saves of it: power-on to the result of a built-in function on the
// default x86 worker, boots of three variants interleaved:
//
//	plain  the user networking of before (unrestricted, TCP, no relay)
//	relay  restricted, the worker port reached through the guestfwd relay
//	       QEMU forks per connection (the small mfrelay program, make build):
//	       what every worker did before the port, and ARM virt workers do
//	port   restricted, the session over the worker's virtio-serial port
//	       (sessionport.go): the default now
//
// MF_BOOTS sets the boots per variant (default 12). Run:
//
//	flock /tmp/mf/qemu.lock go test -run - -bench UserNetCost -benchtime 1x ./orchestrator/power/
func BenchmarkUserNetCost(b *testing.B) {
	w := qemutest.Worker(b, nil)
	boots := 12
	fmt.Sscan(os.Getenv("MF_BOOTS"), &boots)
	repo, err := builder.FindRepo(".")
	if err != nil {
		b.Fatal(err)
	}
	relay := filepath.Join(b.TempDir(), "mfrelay")
	build := exec.Command("go", "build", "-trimpath", "-o", relay, "./cmd/mfrelay")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("%v\n%s", err, out)
	}
	variants := []string{"plain", "relay", "port"}
	got := map[string][]float64{}  // power-on to result
	boot := map[string][]float64{} // the guest's uptime at connect
	init := map[string][]float64{} // the guest's uptime when PID 1 started
	up := map[string][]float64{}   // PID 1's start to the network up
	lag := map[string][]float64{}  // host ms at the hello minus the guest's uptime at connect
	rest := map[string][]float64{} // hello to result
	dial := map[string][]float64{} // the guest's connect: uptime at connect minus uptime at network up
	load := func() string { s, _ := os.ReadFile("/proc/loadavg"); return string(s[:14]) }
	b.Logf("load average at start: %s", load())
	b.ResetTimer()
	for i := 0; i < boots; i++ {
		for j := range variants {
			v := variants[(i+j)%len(variants)] // rotate which goes first
			ms, s, err := netColdStart(b, w, v, relay)
			if err != nil {
				b.Fatalf("%s boot %d: %v", v, i, err)
			}
			got[v] = append(got[v], ms)
			boot[v] = append(boot[v], s.connected)
			init[v] = append(init[v], s.init)
			up[v] = append(up[v], s.network-s.init)
			lag[v] = append(lag[v], s.hello-s.connected)
			rest[v] = append(rest[v], ms-s.hello)
			dial[v] = append(dial[v], s.connected-s.network)
		}
	}
	b.StopTimer()
	b.Logf("load average at end: %s", load())
	base := quantile(got["plain"], 0.5)
	for _, v := range variants {
		xs := got[v]
		med := quantile(xs, 0.5)
		b.ReportMetric(med, v+"-median-ms")
		// Boots of one round ran back to back: their difference is
		// freer of the host's load swings than the medians' difference.
		diff := make([]float64, len(xs))
		for i := range xs {
			diff[i] = xs[i] - got["plain"][i]
		}
		b.Logf("%-6s power-on to result median %6.0f ms  p10 %6.0f  p90 %6.0f  (%+.1f%% vs plain); per round minus plain: median %+5.0f ms (%+.1f%%), p10 %+5.0f, p90 %+5.0f; %d boots",
			v, med, quantile(xs, 0.1), quantile(xs, 0.9), 100*(med-base)/base,
			quantile(diff, 0.5), 100*quantile(diff, 0.5)/base, quantile(diff, 0.1), quantile(diff, 0.9), len(xs))
		b.Logf("%-6s   uptime at connect median %5.0f ms (p10 %5.0f, p90 %5.0f); the guest's connect median %5.1f ms (p10 %5.1f, p90 %5.1f); hello to result median %5.0f ms (p10 %5.0f, p90 %5.0f)",
			v, quantile(boot[v], 0.5), quantile(boot[v], 0.1), quantile(boot[v], 0.9),
			quantile(dial[v], 0.5), quantile(dial[v], 0.1), quantile(dial[v], 0.9),
			quantile(rest[v], 0.5), quantile(rest[v], 0.1), quantile(rest[v], 0.9))
		b.Logf("%-6s   uptime at PID 1 median %5.0f ms (p10 %5.0f, p90 %5.0f); PID 1 to network up median %5.1f ms (p10 %5.1f, p90 %5.1f)",
			v, quantile(init[v], 0.5), quantile(init[v], 0.1), quantile(init[v], 0.9),
			quantile(up[v], 0.5), quantile(up[v], 0.1), quantile(up[v], 0.9))
		// What the guest's clock does not see: qemu's start before the
		// guest runs, and the hello's way to the host.
		b.Logf("%-6s   host's hello minus the guest's uptime at connect median %5.0f ms (p10 %5.0f, p90 %5.0f)",
			v, quantile(lag[v], 0.5), quantile(lag[v], 0.1), quantile(lag[v], 0.9))
	}
}

// netColdStart boots worker w once in variant v (BenchmarkUserNetCost) and
// returns the ms from power-on to the result of one built-in call, served
// by a bare protocol server, and the boot's stamps.
func netColdStart(b *testing.B, w builder.BootFiles, v, relay string) (_ float64, _ stamps, err error) {
	cl := cluster.Local(1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, stamps{}, err
	}
	defer ln.Close()
	cl.Network.Port = ln.Addr().(*net.TCPAddr).Port
	q, err := power.NewQEMU(context.Background(), power.QEMUConfig{Kernel: w.Kernel, Initrd: w.Initramfs, Accel: "tcg",
		Cluster: cl, LogDir: b.TempDir(), Log: slog.New(slog.DiscardHandler), Relay: relay})
	if err != nil {
		return 0, stamps{}, err
	}
	defer q.Close()
	defer func() {
		if err != nil { // the console says why
			con, _ := os.ReadFile(q.LogPath(cl.Workers[0].ID))
			err = fmt.Errorf("%w\nconsole:\n%s", err, con)
		}
	}()
	ports := make(chan net.Conn, 1)
	q.OnSession(func(_ string, c net.Conn) { ports <- c })
	switch v {
	case "plain":
		power.PlainNet(q)
	case "relay":
		power.RelayPort(q)
	}
	start := time.Now()
	if err := q.PowerOn(context.Background(), cl.Workers[0]); err != nil {
		return 0, stamps{}, err
	}
	var c net.Conn
	if v == "port" {
		select {
		case c = <-ports:
		case <-time.After(time.Minute):
			return 0, stamps{}, errors.New("no session port")
		}
	} else {
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Minute))
		if c, err = ln.Accept(); err != nil {
			return 0, stamps{}, fmt.Errorf("no worker: %w", err)
		}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	pc, hello, err := protocol.ServerHandshake(c, c.RemoteAddr(), protocol.ClusterKeys(cl.SecretBytes(), map[string]string{cl.Workers[0].ID: ""}))
	if err != nil {
		return 0, stamps{}, fmt.Errorf("hello: %w", err)
	}
	helloAt := float64(time.Since(start).Microseconds()) / 1000
	if err := pc.Send(protocol.TypeJob, protocol.Job{ID: "j", Function: "float_operations", Args: json.RawMessage(`{"n":1000}`)}); err != nil {
		return 0, stamps{}, err
	}
	var res protocol.Result
	if err := pc.Expect(protocol.TypeResult, &res); err != nil {
		return 0, stamps{}, err
	}
	ms := float64(time.Since(start).Microseconds()) / 1000
	if res.Error != "" {
		return 0, stamps{}, fmt.Errorf("function: %s", res.Error)
	}
	pc.Send(protocol.TypeCommand, protocol.Command{Action: protocol.CmdPowerOff})
	return ms, stamps{helloAt, hello.Boot.ConnectedMS, hello.Boot.NetworkMS, hello.Boot.InitMS}, nil
}

// stamps are one boot's host ms from power-on to the hello and the
// guest's uptime at connect, at network up and at PID 1's start.
type stamps struct{ hello, connected, network, init float64 }

func quantile(xs []float64, q float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}
