package power_test

import (
	"context"
	"encoding/json"
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
// restrict=on, the worker port reached through a guestfwd relay QEMU starts
// per connection) costs a cold start: power-on to the result of a built-in
// function on the default x86 worker, boots of three variants interleaved:
//
//	plain    the user networking of before (unrestricted, no relay)
//	mfrelay  restricted, relayed by the small mfrelay program (make build)
//	self     restricted, relayed by the orchestrator's own binary (here the
//	         test binary, 20-odd MB like mforch): what mforch does without mfrelay
//
// MF_BOOTS sets the boots per variant (default 12). Run:
//
//	go test -run - -bench UserNetCost -benchtime 1x ./orchestrator/power/
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
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	variants := []struct{ name, relay string }{{"plain", ""}, {"mfrelay", relay}, {"self", self}}
	got := map[string][]float64{}  // power-on to result
	lag := map[string][]float64{}  // host's accept minus guest's connect (see netColdStart)
	boot := map[string][]float64{} // the guest's uptime at connect
	rest := map[string][]float64{} // accept to result
	dial := map[string][]float64{} // the guest's connect: uptime at connect minus uptime at network up
	load := func() string { s, _ := os.ReadFile("/proc/loadavg"); return string(s[:14]) }
	b.Logf("load average at start: %s", load())
	b.ResetTimer()
	for i := 0; i < boots; i++ {
		for j := range variants {
			v := variants[(i+j)%len(variants)] // rotate which goes first
			ms, l, s, err := netColdStart(b, w, v.name == "plain", v.relay)
			if err != nil {
				b.Fatalf("%s boot %d: %v", v.name, i, err)
			}
			got[v.name] = append(got[v.name], ms)
			lag[v.name] = append(lag[v.name], l)
			boot[v.name] = append(boot[v.name], s.connected)
			rest[v.name] = append(rest[v.name], ms-s.accepted)
			dial[v.name] = append(dial[v.name], s.connected-s.network)
		}
	}
	b.StopTimer()
	b.Logf("load average at end: %s", load())
	base := quantile(got["plain"], 0.5)
	baseLag := quantile(lag["plain"], 0.5)
	for _, v := range variants {
		xs, ls := got[v.name], lag[v.name]
		med, ml := quantile(xs, 0.5), quantile(ls, 0.5)
		b.ReportMetric(med, v.name+"-median-ms")
		b.ReportMetric(ml, v.name+"-connect-lag-ms")
		b.Logf("%-8s power-on to result median %6.0f ms  p10 %6.0f  p90 %6.0f  (%+.1f%% vs plain); connect lag median %5.1f ms  p10 %5.1f  p90 %5.1f  (%+.1f ms vs plain, %.1f%% of plain's total); %d boots",
			v.name, med, quantile(xs, 0.1), quantile(xs, 0.9), 100*(med-base)/base,
			ml, quantile(ls, 0.1), quantile(ls, 0.9), ml-baseLag, 100*(ml-baseLag)/base, len(xs))
		b.Logf("%-8s   uptime at connect median %5.0f ms (p10 %5.0f, p90 %5.0f); the guest's connect median %5.1f ms (p10 %5.1f, p90 %5.1f); accept to result median %5.0f ms (p10 %5.0f, p90 %5.0f)",
			v.name, quantile(boot[v.name], 0.5), quantile(boot[v.name], 0.1), quantile(boot[v.name], 0.9),
			quantile(dial[v.name], 0.5), quantile(dial[v.name], 0.1), quantile(dial[v.name], 0.9),
			quantile(rest[v.name], 0.5), quantile(rest[v.name], 0.1), quantile(rest[v.name], 0.9))
	}
}

// netColdStart boots worker w once and returns the ms from power-on to the
// result of one built-in call, served by a bare protocol server, and the
// connect lag: the ms from power-on to the host's accept minus the worker's
// uptime when its connect returned. A guestfwd connect returns in the guest
// before the relay has started; the relay's start and its own connect are
// what the lag adds, free of the boot's jitter (the uptime carries that).
func netColdStart(b *testing.B, w builder.BootFiles, plain bool, relay string) (float64, float64, stamps, error) {
	cl := cluster.Local(1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, stamps{}, err
	}
	defer ln.Close()
	cl.Network.Port = ln.Addr().(*net.TCPAddr).Port
	q, err := power.NewQEMU(context.Background(), power.QEMUConfig{Kernel: w.Kernel, Initrd: w.Initramfs, Accel: "tcg",
		Cluster: cl, LogDir: b.TempDir(), Log: slog.New(slog.DiscardHandler), Relay: relay})
	if err != nil {
		return 0, 0, stamps{}, err
	}
	defer q.Close()
	if plain {
		power.PlainNet(q)
	}
	start := time.Now()
	if err := q.PowerOn(context.Background(), cl.Workers[0]); err != nil {
		return 0, 0, stamps{}, err
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Minute))
	c, err := ln.Accept()
	if err != nil {
		return 0, 0, stamps{}, fmt.Errorf("no worker: %w", err)
	}
	accepted := float64(time.Since(start).Microseconds()) / 1000
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	pc, hello, err := protocol.ServerHandshake(c, c.RemoteAddr(), protocol.ClusterKeys(cl.SecretBytes(), map[string]string{cl.Workers[0].ID: ""}))
	if err != nil {
		return 0, 0, stamps{}, fmt.Errorf("hello: %w", err)
	}
	if err := pc.Send(protocol.TypeJob, protocol.Job{ID: "j", Function: "float_operations", Args: json.RawMessage(`{"n":1000}`)}); err != nil {
		return 0, 0, stamps{}, err
	}
	var res protocol.Result
	if err := pc.Expect(protocol.TypeResult, &res); err != nil {
		return 0, 0, stamps{}, err
	}
	ms := float64(time.Since(start).Microseconds()) / 1000
	if res.Error != "" {
		return 0, 0, stamps{}, fmt.Errorf("function: %s", res.Error)
	}
	pc.Send(protocol.TypeCommand, protocol.Command{Action: protocol.CmdPowerOff})
	return ms, accepted - hello.Boot.ConnectedMS, stamps{accepted, hello.Boot.ConnectedMS, hello.Boot.NetworkMS}, nil
}

// stamps are one boot's host ms from power-on to accept and the guest's
// uptime at connect and at network up.
type stamps struct{ accepted, connected, network float64 }

func quantile(xs []float64, q float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}
