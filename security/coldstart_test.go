package security

import (
	"context"
	"encoding/hex"
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
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/protocol"
)

// BenchmarkColdStartCost measures what the new hello (protocol version 2,
// key in a per-boot initramfs) and the function sandbox cost a cold start:
// QEMU start to the result of a user function (wordcount), interleaving
// boots of the worker built from MF_BEFORE_REPO (a checkout before this
// work: version 1, uncontained functions) with this tree's. Run:
//
//	git archive main | tar -x -C /tmp/before
//	MF_BEFORE_REPO=/tmp/before go test -run - -bench ColdStartCost -benchtime 1x ./security
//
// It reports the medians of 10 boots each (MF_BOOTS to change) of the
// total, of the worker's boot (uptime at connecting) and of the function's
// run time as the worker measured it, cold (first call) and warm (median of
// five more calls on the same worker).
func BenchmarkColdStartCost(b *testing.B) {
	beforeRepo := os.Getenv("MF_BEFORE_REPO")
	if beforeRepo == "" {
		b.Skip("set MF_BEFORE_REPO to a checkout to compare with")
	}
	if err := qemutest.KernelCached(); err != nil {
		b.Skip(err)
	}
	boots := 10
	if n, err := fmt.Sscan(os.Getenv("MF_BOOTS"), &boots); n != 1 || err != nil {
		boots = 10
	}
	repo, err := builder.FindRepo(".")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	wc := filepath.Join(dir, "wordcount")
	build := exec.Command("go", "build", "-trimpath", "-o", wc, "./examples/functions/wordcount")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("%v\n%s", err, out)
	}
	img := func(r, name string) builder.BootFiles {
		w, err := builder.BuildWorker(context.Background(), builder.Options{RepoDir: r,
			Cache: cache.Cache{Dir: cache.DefaultDir()}, Functions: map[string]string{"wordcount": wc}},
			filepath.Join(dir, name))
		if err != nil {
			b.Fatal(err)
		}
		return w
	}
	oldW, newW := img(beforeRepo, "old"), img(repo, "new")
	keyDir := filepath.Join(dir, "keys")
	os.Mkdir(keyDir, 0o700)

	var before, after []sample
	b.ResetTimer()
	for i := 0; i < boots; i++ {
		for _, v2 := range []bool{i%2 == 0, i%2 != 0} { // alternate which goes first
			w := oldW
			if v2 {
				w = newW
			}
			s, err := coldStart(w, v2, keyDir)
			if err != nil {
				b.Fatal(err)
			}
			if v2 {
				after = append(after, s)
			} else {
				before = append(before, s)
			}
		}
	}
	b.StopTimer()
	for _, m := range []struct {
		name string
		get  func(sample) float64
	}{
		{"total", func(s sample) float64 { return s.total }},
		{"connected", func(s sample) float64 { return s.connected }},
		{"function", func(s sample) float64 { return s.exec }},
		{"warm-function", func(s sample) float64 { return s.warm }},
	} {
		var o, n []float64
		for i := range before {
			o, n = append(o, m.get(before[i])), append(n, m.get(after[i]))
		}
		mo, mn := median(o), median(n)
		b.ReportMetric(mo, m.name+"-before-ms")
		b.ReportMetric(mn, m.name+"-after-ms")
		b.Logf("%s: before median %.1f ms %.0f; after median %.1f ms %.0f (%+.1f%%)", m.name, mo, o, mn, n, 100*(mn-mo)/mo)
	}
}

// sample is one cold start: QEMU start to the result on the host, the
// worker's uptime at connecting (its boot), and the function's run time as
// the worker measured it (the sandbox's cost is in there).
type sample struct{ total, connected, exec, warm float64 }

// warmRuns is how many more calls each boot serves, for the warm median.
const warmRuns = 5

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// coldStart boots w once and returns the ms from starting QEMU to the
// result of one wordcount call. v2: the key goes in a per-boot initramfs
// and the session opens with the challenge.
func coldStart(w builder.BootFiles, v2 bool, keyDir string) (sample, error) {
	cl := cluster.Local(1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return sample{}, err
	}
	defer ln.Close()
	cl.Network.Port = ln.Addr().(*net.TCPAddr).Port
	// From here on, as mforch does it: the per-boot initramfs is part of
	// the cost.
	start := time.Now()
	initrd := w.Initramfs
	if v2 {
		key, err := protocol.WorkerKey(cl.SecretBytes(), "vm0")
		if err != nil {
			return sample{}, err
		}
		if initrd, err = power.BootInitrd(keyDir, w.Initramfs, "vm0", key); err != nil {
			return sample{}, err
		}
		defer os.Remove(initrd)
	}
	logDir, _ := os.MkdirTemp("", "mf-coldstart-")
	defer os.RemoveAll(logDir)
	extra := ""
	if !v2 {
		// A worker from before version 2 wants the cluster secret on its
		// command line (mforch no longer puts it there).
		extra = "mf.secret=" + hex.EncodeToString(cl.SecretBytes())
	}
	q, err := power.NewQEMU(context.Background(), power.QEMUConfig{Kernel: w.Kernel, Initrd: initrd, Accel: "tcg",
		Cluster: cl, LogDir: logDir, Log: slog.New(slog.DiscardHandler), Cmdline: extra})
	if err != nil {
		return sample{}, err
	}
	defer q.Close()
	if err := q.PowerOn(context.Background(), cl.Workers[0]); err != nil {
		return sample{}, err
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Minute))
	c, err := ln.Accept()
	if err != nil {
		return sample{}, fmt.Errorf("no worker: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	var pc *protocol.Conn
	var hello protocol.Hello
	if v2 {
		pc, hello, err = protocol.ServerHandshake(c, c.RemoteAddr(), protocol.ClusterKeys(cl.SecretBytes(), map[string]string{"vm0": ""}))
	} else {
		pc = protocol.NewConn(c, cl.SecretBytes())
		err = pc.Expect(protocol.TypeHello, &hello)
	}
	if err != nil {
		return sample{}, fmt.Errorf("hello: %w", err)
	}
	if err := pc.Send(protocol.TypeJob, protocol.Job{ID: "j", Function: "wordcount", Args: json.RawMessage(`"one two three"`)}); err != nil {
		return sample{}, err
	}
	var res protocol.Result
	if err := pc.Expect(protocol.TypeResult, &res); err != nil {
		return sample{}, err
	}
	ms := float64(time.Since(start).Microseconds()) / 1000
	if res.Error != "" {
		return sample{}, fmt.Errorf("wordcount: %s", res.Error)
	}

	// Warm runs on the same worker: the function's own cost, boot aside.
	var warm []float64
	for i := 0; i < warmRuns; i++ {
		if err := pc.Send(protocol.TypeJob, protocol.Job{ID: fmt.Sprint("w", i), Function: "wordcount", Args: json.RawMessage(`"one two three"`)}); err != nil {
			return sample{}, err
		}
		var r protocol.Result
		if err := pc.Expect(protocol.TypeResult, &r); err != nil || r.Error != "" {
			return sample{}, fmt.Errorf("warm run: %v %s", err, r.Error)
		}
		warm = append(warm, r.ExecMS)
	}
	pc.Send(protocol.TypeCommand, protocol.Command{Action: protocol.CmdPowerOff})
	return sample{ms, hello.Boot.ConnectedMS, res.ExecMS, median(warm)}, nil
}
