package openfaas

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/openfaas/faas-provider/types"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/bundle/oci"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/e2e/qemutest"
	"github.com/microfaas/microfaas/internal/testfn"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/deploy"
	"github.com/microfaas/microfaas/orchestrator/power"
	mftarget "github.com/microfaas/microfaas/target"
)

func TestMain(m *testing.M) {
	code := m.Run()
	qemutest.RemoveBuilt()
	os.Exit(code)
}

// qemuWorker is the x86 worker with the example user function wordcount
// in its initramfs.
func qemuWorker(tb testing.TB) builder.BootFiles {
	tb.Helper()
	return qemutest.Worker(tb, map[string]string{"wordcount": "./examples/functions/wordcount"})
}

// counting is the QEMU power controller, counting power-ons.
type counting struct {
	*power.QEMU
	powerOns atomic.Int32
}

func (c *counting) PowerOn(ctx context.Context, w cluster.Worker) error {
	c.powerOns.Add(1)
	return c.QEMU.PowerOn(ctx, w)
}

// PowerOnBundle is the power-on with a run-time deployed bundle in the
// worker's boot (power.BundleLoader).
func (c *counting) PowerOnBundle(ctx context.Context, w cluster.Worker, b power.BootBundle) error {
	c.powerOns.Add(1)
	return c.QEMU.PowerOnBundle(ctx, w, b)
}

// newQEMUHarness runs n QEMU workers under a real orchestrator with the
// provider in front.
func newQEMUHarness(tb testing.TB, n int, idle time.Duration, pcfg Config) (*harness, *counting) {
	tb.Helper()
	w := qemuWorker(tb)
	cl := cluster.Local(n)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cl.Network.Port = ln.Addr().(*net.TCPAddr).Port
	logDir := tb.TempDir()
	q, err := power.NewQEMU(context.Background(), power.QEMUConfig{Arch: mftarget.X86, Kernel: w.Kernel, Initrd: w.Initramfs,
		Accel: "auto", Cluster: cl, LogDir: logDir, Failsafe: 60})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		q.Close()
		if tb.Failed() {
			for i := 0; i < n; i++ {
				if b, err := os.ReadFile(q.LogPath(fmt.Sprintf("vm%d", i))); err == nil {
					tb.Logf("console of vm%d:\n%s", i, b)
				}
			}
		}
	})
	c := &counting{QEMU: q}
	ocfg := orchestrator.Config{IdleTimeout: idle, PowerUpTimeout: 60 * time.Second}
	if pcfg.Deploys != nil {
		ocfg.Bundles = pcfg.Deploys
	}
	h := start(tb, cl, ln, c, ocfg, pcfg)
	tb.Logf("QEMU accelerator: %s", q.Accel())
	return h, c
}

func (h *harness) deploy(d types.FunctionDeployment) {
	h.t.Helper()
	if res, b := h.call("POST", "/system/functions", d); res.StatusCode != http.StatusAccepted {
		h.t.Fatalf("deploy %s: %d %s", d.Service, res.StatusCode, b)
	}
}

// TestQEMUDeployInvoke deploys a built-in and a user function with the
// provider API and calls each through /function/{name}; the one worker is
// off before each call, so each call boots it.
func TestQEMUDeployInvoke(t *testing.T) {
	h, c := newQEMUHarness(t, 1, 0, Config{})
	h.deploy(types.FunctionDeployment{Service: "sha", Image: "microfaas/cascading_sha256"})
	h.deploy(types.FunctionDeployment{Service: "wc", Image: "microfaas/fn:wordcount",
		EnvVars: map[string]string{"content_type": "application/json"}})
	tests := []struct {
		fn, body, want, wantCT string
	}{
		{"sha", `{"data":"MicroFaaS","rounds":1000}`, sha("MicroFaaS", 1000), "text/plain"},
		{"wc", "one two three\nfour\n", `{"bytes":19,"lines":2,"words":4}` + "\n", "application/json"},
		{"wc", `{"a": "<b>"}`, `{"bytes":13,"lines":1,"words":2}` + "\n", "application/json"},
	}
	for i, tt := range tests {
		h.waitAllOff(30 * time.Second)
		if st := h.status(tt.fn); st.AvailableReplicas != 0 || st.Replicas != 0 {
			t.Fatalf("before call %d: replicas %d/%d, want 0/0", i, st.AvailableReplicas, st.Replicas)
		}
		start := time.Now()
		res, b := h.call("POST", "/function/"+tt.fn, tt.body)
		took := time.Since(start)
		if res.StatusCode != 200 || string(b) != tt.want || res.Header.Get("Content-Type") != tt.wantCT {
			t.Fatalf("%s %q: %d %q %q, want 200 %q %q", tt.fn, tt.body, res.StatusCode, b, res.Header.Get("Content-Type"), tt.want, tt.wantCT)
		}
		if got := int(c.powerOns.Load()); got != i+1 {
			t.Errorf("after call %d: %d power-ons, want %d (a cold worker per call)", i, got, i+1)
		}
		t.Logf("%s: cold call in %s on %s (exec %s ms)", tt.fn, took.Round(time.Millisecond), res.Header.Get(HeaderWorker), res.Header.Get(HeaderExecMS))
	}
	_, b := h.call("GET", "/system/logs?name=wc&follow=false", nil)
	for _, m := range ndjson(t, b) {
		t.Logf("log: %s %s", m.Instance, m.Text)
	}
}

// TestQEMUDeployImage deploys the wordcount example as an OCI image from a
// registry on loopback (no mfbuild in between: the worker image is the one
// with wordcount baked in, so both paths run on the same worker) and calls
// it cold through the provider, alternating with the baked-in
// microfaas/fn:wordcount: the bundle reaches the worker with its power-on,
// and both give the same output. Logs the deploy time, deploy -> first
// result, and the medians of the cold calls.
func TestQEMUDeployImage(t *testing.T) {
	bin := testfn.Wordcount(t, "../..", "amd64")
	_, push := loopbackRegistry(t)
	img := testfn.Image(t, "amd64", map[string][]byte{"wordcount": bin}, nil, "/wordcount")
	// testfn.Image's working directory, /app, is not in this image (its
	// layer has no directories): run from the root.
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config.WorkingDir = "/"
	img, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	ref := push("wordcount:1", img)
	store, err := deploy.New(deploy.Config{Dir: t.TempDir(), Resolver: &oci.Resolver{Insecure: []string{"127.0.0.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	h, c := newQEMUHarness(t, 1, 0, Config{Deploys: store, Archs: []string{"x86"}})
	h.deploy(types.FunctionDeployment{Service: "baked", Image: "microfaas/fn:wordcount"})
	start := time.Now()
	h.deploy(types.FunctionDeployment{Service: "pulled", Image: ref})
	deployed := time.Since(start)
	rec, _ := store.Get("pulled")
	const body, want = "one two three\nfour\n", `{"bytes":19,"lines":2,"words":4}` + "\n"
	const rounds = 5
	took := map[string][]time.Duration{}
	for i := 0; i < rounds; i++ {
		for _, fn := range []string{"pulled", "baked"} {
			h.waitAllOff(30 * time.Second)
			before := c.powerOns.Load()
			t0 := time.Now()
			res, b := h.call("POST", "/function/"+fn, body)
			d := time.Since(t0)
			if res.StatusCode != 200 || string(b) != want {
				t.Fatalf("%s call %d: %d %q, want 200 %q", fn, i, res.StatusCode, b, want)
			}
			if c.powerOns.Load() != before+1 {
				t.Errorf("%s call %d: not a cold call (%d power-ons)", fn, i, c.powerOns.Load()-before)
			}
			if fn == "pulled" && i == 0 {
				t.Logf("deploy (pull, flatten, bundle of %d bytes) %s; deploy -> first result %s",
					rec.Archs["x86"].Bundle.Size, deployed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			}
			took[fn] = append(took[fn], d)
		}
	}
	for _, fn := range []string{"pulled", "baked"} {
		t.Logf("%s: cold calls, median %.0f ms, all %s", fn, ms(median(took[fn])), list(took[fn]))
	}
	_, b := h.call("GET", "/system/logs?name=pulled&follow=false", nil)
	if msgs := ndjson(t, b); len(msgs) < rounds {
		t.Errorf("%d log messages for pulled, want at least %d", len(msgs), rounds)
	}
}

// TestQEMUWatchdogImage deploys an of-watchdog image (mode=http, a Go
// handler answering 201, X-Fn: yes and the bytes 0..255 then the request
// body: internal/testfn) through the provider and calls it on a QEMU
// worker with a binary body, a path and a query: the status, the header
// and the bytes come back unchanged, cold and then warm (the worker kept
// up, the watchdog still running).
func TestQEMUWatchdogImage(t *testing.T) {
	host := testfn.Registry(t)
	ref := host + "/of-watchdog:1"
	testfn.Push(t, ref, testfn.OfWatchdogImage(t, testfn.AMD64))
	store, err := deploy.New(deploy.Config{Dir: t.TempDir(), Resolver: &oci.Resolver{Insecure: []string{host}}})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := newQEMUHarness(t, 1, time.Minute, Config{Deploys: store, Archs: []string{"x86"}})
	h.deploy(types.FunctionDeployment{Service: "wd", Image: ref})
	if rec, _ := store.Get("wd"); !rec.Watchdog {
		t.Fatalf("record %+v: want a watchdog image", rec)
	}
	body := []byte{0, 1, 0xfe, 0xff, '\n', 'x'}
	want := append(testfn.HandlerPrefix(), body...)
	for _, call := range []string{"cold", "warm"} {
		start := time.Now()
		res, b := h.call("POST", "/function/wd/some/path?q=1", body, "Content-Type", "application/octet-stream")
		if res.StatusCode != 201 || res.Header.Get("X-Fn") != "yes" || !bytes.Equal(b, want) {
			t.Fatalf("%s call: %d X-Fn %q body %x; want 201, yes, %x", call, res.StatusCode, res.Header.Get("X-Fn"), b, want)
		}
		t.Logf("%s call: %s on %s (exec %s ms)", call, time.Since(start).Round(time.Millisecond), res.Header.Get(HeaderWorker), res.Header.Get(HeaderExecMS))
	}
	// The watchdog's log of each call reaches the logs route.
	_, lb := h.call("GET", "/system/logs?name=wd&follow=false", nil)
	served := 0
	for _, m := range ndjson(t, lb) {
		t.Logf("log: %s %s", m.Instance, m.Text)
		if strings.Contains(m.Text, "POST /some/path?q=1 - 201") {
			served++
		}
	}
	if served != 2 {
		t.Errorf("%d watchdog log lines of the calls in the logs route, want 2", served)
	}
}

// TestQEMUScaleFromZero is the gateway's scale-from-zero on a real worker:
// no replica, a scale request boots the worker, the status shows it
// available, and the call runs on it without another boot.
func TestQEMUScaleFromZero(t *testing.T) {
	h, c := newQEMUHarness(t, 1, 0, Config{})
	h.deploy(types.FunctionDeployment{Service: "sha", Image: "microfaas/cascading_sha256"})
	if st := h.status("sha"); st.AvailableReplicas != 0 || st.Replicas != 0 {
		t.Fatalf("before: replicas %d/%d, want 0/0", st.AvailableReplicas, st.Replicas)
	}
	start := time.Now()
	if res, b := h.call("POST", "/system/scale-function/sha", types.ScaleServiceRequest{ServiceName: "sha", Replicas: 1}); res.StatusCode != 202 {
		t.Fatalf("scale: %d %s", res.StatusCode, b)
	}
	// The gateway polls the status every 100 ms; here, after every worker
	// state change.
	h.waitUntil("a replica after scaling", 60*time.Second, func() bool { return h.status("sha").AvailableReplicas > 0 })
	ready := time.Since(start)
	res, b := h.call("POST", "/function/sha", `{"data":"zero","rounds":10}`)
	if res.StatusCode != 200 || string(b) != sha("zero", 10) {
		t.Fatalf("call: %d %q", res.StatusCode, b)
	}
	if n := c.powerOns.Load(); n != 1 {
		t.Errorf("%d power-ons, want 1: the call should run on the worker the scale request booted", n)
	}
	t.Logf("scale request -> available replica in %s; call answered %s after the scale request",
		ready.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// BenchmarkQEMULatency measures calls through the provider API under the
// accelerator in use (TCG here): cold, the worker off before each call, and
// warm, the worker kept up by an idle timeout; 10 calls each, reported as
// medians.
//
//	go test -run '^$' -bench QEMULatency -benchtime 1x ./orchestrator/openfaas/
func BenchmarkQEMULatency(b *testing.B) {
	const calls = 10
	body := `{"data":"MicroFaaS","rounds":1000}`
	want := sha("MicroFaaS", 1000)
	measure := func(h *harness, cold bool) []time.Duration {
		var ds []time.Duration
		for i := 0; i < calls; i++ {
			if cold {
				h.waitAllOff(30 * time.Second)
			}
			start := time.Now()
			res, got := h.call("POST", "/function/sha", body)
			d := time.Since(start)
			if res.StatusCode != 200 || string(got) != want {
				b.Fatalf("call %d: %d %q", i, res.StatusCode, got)
			}
			ds = append(ds, d)
		}
		return ds
	}
	for i := 0; i < b.N; i++ {
		h, _ := newQEMUHarness(b, 1, 0, Config{})
		h.deploy(types.FunctionDeployment{Service: "sha", Image: "microfaas/cascading_sha256"})
		cold := measure(h, true)
		hw, _ := newQEMUHarness(b, 1, time.Minute, Config{})
		hw.deploy(types.FunctionDeployment{Service: "sha", Image: "microfaas/cascading_sha256"})
		if res, got := hw.call("POST", "/function/sha", body); res.StatusCode != 200 {
			b.Fatalf("warm-up call: %d %q", res.StatusCode, got)
		}
		warm := measure(hw, false)
		b.ReportMetric(ms(median(cold)), "cold-median-ms")
		b.ReportMetric(ms(median(warm)), "warm-median-ms")
		b.Logf("cold (worker off -> response), %d calls: median %.0f ms, all %s", calls, ms(median(cold)), list(cold))
		b.Logf("warm (worker up), %d calls: median %.1f ms, all %s", calls, ms(median(warm)), list(warm))
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func list(ds []time.Duration) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, fmt.Sprintf("%.1f", ms(d)))
	}
	return "[" + strings.Join(parts, " ") + "] ms"
}
