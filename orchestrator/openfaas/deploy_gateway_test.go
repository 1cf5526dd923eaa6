package openfaas

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openfaas/faas-provider/auth"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/testfn"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/deploy"
	"github.com/microfaas/microfaas/orchestrator/power"
	mftarget "github.com/microfaas/microfaas/target"
)

// bundleCounting is the QEMU power controller, counting plain power-ons
// and power-ons that carry a run-time bundle in the boot's initramfs.
type bundleCounting struct {
	*power.QEMU
	plain, withBundle atomic.Int32
}

func (c *bundleCounting) PowerOn(ctx context.Context, w cluster.Worker) error {
	c.plain.Add(1)
	return c.QEMU.PowerOn(ctx, w)
}

func (c *bundleCounting) PowerOnBundle(ctx context.Context, w cluster.Worker, b power.BootBundle) error {
	c.withBundle.Add(1)
	return c.QEMU.PowerOnBundle(ctx, w, b)
}

// TestGatewayDeploysImages is issue 17 end to end: real images (of-watchdog
// in front of a Go handler, the classic watchdog with busybox sh, Debian's
// python3, a multi-platform index) pushed to a registry on loopback,
// deployed with faas-cli through the unmodified OpenFaaS gateway, pulled by
// mforch's deploy.Store into bundles, and run on a QEMU worker booted from
// an initramfs that has none of them baked in.
func TestGatewayDeploysImages(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU workers and runs the OpenFaaS gateway")
	}
	tools := lookTools(t)
	for _, port := range []string{":8080", ":8082"} { // the gateway's fixed ports
		ln, err := net.Listen("tcp", port)
		if err != nil {
			t.Skipf("the OpenFaaS gateway needs port %s, which is taken: %v", port, err)
		}
		ln.Close()
	}

	// The images, in a real registry.
	reg := testfn.Registry(t)
	imgStart := time.Now()
	testfn.Push(t, reg+"/wd:1", testfn.OfWatchdogImage(t, testfn.AMD64))
	testfn.Push(t, reg+"/wd:2", testfn.ClassicWatchdogImage(t))
	testfn.Push(t, reg+"/py:1", testfn.PythonImage(t))
	testfn.Push(t, reg+"/upper:1", testfn.UpperIndex(t))
	t.Logf("images built and pushed in %s", time.Since(imgStart).Round(time.Millisecond))

	resolver, err := deploy.NewResolver("", []string{reg})
	if err != nil {
		t.Fatal(err)
	}
	store, err := deploy.New(deploy.Config{Dir: t.TempDir(), Resolver: resolver})
	if err != nil {
		t.Fatal(err)
	}

	// One QEMU worker whose initramfs has no image function.
	w := qemuWorker(t)
	cl := cluster.Local(1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl.Network.Port = ln.Addr().(*net.TCPAddr).Port
	logDir := t.TempDir()
	q, err := power.NewQEMU(context.Background(), power.QEMUConfig{Arch: mftarget.X86, Kernel: w.Kernel, Initrd: w.Initramfs,
		Accel: "auto", Cluster: cl, LogDir: logDir, Failsafe: 120})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		q.Close()
		if t.Failed() {
			if b, err := os.ReadFile(q.LogPath("vm0")); err == nil {
				t.Logf("console of vm0:\n%s", tail(b, 8000))
			}
		}
	})
	ctrl := &bundleCounting{QEMU: q}
	creds := &auth.BasicAuthCredentials{User: "admin", Password: fmt.Sprintf("pw-%d", time.Now().UnixNano())}
	// Idling keeps the worker warm between the calls that follow each
	// other (seconds apart), so the redeploy meets a warm worker.
	h := start(t, cl, ln, ctrl, orchestrator.Config{Bundles: store, IdleTimeout: 20 * time.Second, PowerUpTimeout: 90 * time.Second},
		Config{Auth: creds, Deploys: store, Archs: []string{mftarget.X86.Name}})

	gw, cli := startGateway(t, tools, h.srv.URL+"/", creds)
	mustCLI := func(stdin, want string, args ...string) string {
		t.Helper()
		out, err := cli(stdin, args...)
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("faas-cli %s: %v; want output containing %q", strings.Join(args, " "), err, want)
		}
		return out
	}
	mustCLI(creds.Password, "credentials saved", "login", "--username", creds.User, "--password-stdin")

	// of-watchdog (HTTP mode): the handler's status, header and binary
	// body come back through the gateway unchanged.
	mustCLI("", "Deployed. 202 Accepted.", "deploy", "--image", reg+"/wd:1", "--name", "wd")
	rec1, ok := store.Get("wd")
	if !ok || !rec1.Watchdog {
		t.Fatalf("wd: record %+v, want a watchdog deployment", rec1)
	}
	body := []byte("\x00binary\xff body")
	t0 := time.Now()
	res, got := post(t, gw+"/function/wd", body)
	t.Logf("wd:1 cold call through the gateway: %s", time.Since(t0).Round(time.Millisecond))
	// The gateway scaled wd up from zero before sending the call: that
	// power-on carried wd's bundle, so the call fetched nothing.
	if n := ctrl.withBundle.Load(); n != 1 {
		t.Errorf("scale from zero: %d power-ons with a bundle, want 1 (wd:1's)", n)
	}
	if res.StatusCode != http.StatusCreated || res.Header.Get("X-Fn") != "yes" || !bytes.Equal(got, append(testfn.HandlerPrefix(), body...)) {
		_, logs := h.call("GET", "/system/logs?name=wd&follow=false", nil)
		t.Fatalf("wd:1: %d %v body %q; want 201, X-Fn: yes and the handler's bytes; function log:\n%s", res.StatusCode, res.Header, got, logs)
	}
	// faas-cli takes any status but 200 as a failure and says which.
	out, err := cli("via faas-cli", "invoke", "wd")
	if want := "status code: 201 - " + string(testfn.HandlerPrefix()) + "via faas-cli"; err == nil || !strings.Contains(out, want) {
		t.Errorf("faas-cli invoke wd: %v: %q, want an error and %q", err, out, want)
	}

	// Redeploy the same name to another image (the classic watchdog): the
	// next call runs the new image, and the old bundle is collected.
	mustCLI("", "Deployed. 202 Accepted.", "deploy", "--image", reg+"/wd:2", "--name", "wd")
	rec2, _ := store.Get("wd")
	if rec2.Archs["x86"].Bundle.Digest == rec1.Archs["x86"].Bundle.Digest {
		t.Fatalf("redeploy kept bundle %s", rec1.Archs["x86"].Bundle.Digest)
	}
	t0 = time.Now()
	res, got = post(t, gw+"/function/wd", []byte("hi\n"))
	t.Logf("wd:2 call after the redeploy: %s", time.Since(t0).Round(time.Millisecond))
	if res.StatusCode != http.StatusOK || string(got) != "hi\ndone\n" {
		_, logs := h.call("GET", "/system/logs?name=wd&follow=false", nil)
		t.Fatalf("wd:2: %d %v %q, want 200 %q; function log:\n%s", res.StatusCode, res.Header, got, "hi\ndone\n", logs)
	}
	if p, _ := store.Path(rec1.Archs["x86"].Bundle.Digest); exists(p) {
		t.Errorf("wd:1's bundle %s is still there after the redeploy", p)
	}

	// Plain stdin -> stdout images: Debian's python3 and the amd64 image
	// of a multi-platform index.
	mustCLI("", "Deployed. 202 Accepted.", "deploy", "--image", reg+"/py:1", "--name", "py")
	mustCLI("", "Deployed. 202 Accepted.", "deploy", "--image", reg+"/upper:1", "--name", "upper")
	t0 = time.Now()
	if out := mustCLI("hello python", "HELLO PYTHON", "invoke", "py"); strings.TrimSpace(out) != "HELLO PYTHON" {
		t.Errorf("invoke py: %q", out)
	}
	t.Logf("py call: %s", time.Since(t0).Round(time.Millisecond))
	if out := mustCLI("from an index", "FROM AN INDEX", "invoke", "upper"); strings.TrimSpace(out) != "FROM AN INDEX" {
		t.Errorf("invoke upper: %q", out)
	}
	mustCLI("", reg+"/py:1", "describe", "py")

	// A call straight to mforch with every worker off powers one on for
	// that function: the bundle rides in the boot's initramfs.
	h.waitAllOff(90 * time.Second)
	t0 = time.Now()
	res, got = post(t, h.srv.URL+"/function/upper", []byte("cold"))
	t.Logf("upper cold call straight to mforch: %s", time.Since(t0).Round(time.Millisecond))
	if res.StatusCode != http.StatusOK || string(got) != "COLD" {
		t.Errorf("upper: %d %q, want 200 COLD", res.StatusCode, got)
	}
	if n := ctrl.withBundle.Load(); n != 2 {
		t.Errorf("%d power-ons with a bundle, want 2 (wd:1's scale from zero, then upper's)", n)
	}

	// Remove: the function is gone and so is its bundle.
	mustCLI("", "Removing old function", "remove", "wd")
	if out, err := cli("", "invoke", "wd"); err == nil {
		t.Errorf("invoking a removed function succeeded: %s", out)
	}
	if p, _ := store.Path(rec2.Archs["x86"].Bundle.Digest); exists(p) {
		t.Errorf("wd:2's bundle %s is still there after the remove", p)
	}
	if _, ok := store.Get("wd"); ok {
		t.Error("wd still deployed after faas-cli remove")
	}
	t.Logf("power-ons: %d plain, %d with a bundle in the initramfs", ctrl.plain.Load(), ctrl.withBundle.Load())
	// How long the worker took to get, check and unpack each bundle.
	if b, err := os.ReadFile(q.LogPath("vm0")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "bundle checked") {
				t.Logf("vm0: %s", l)
			}
		}
	}
}

// startGateway runs Prometheus and the OpenFaaS gateway in front of the
// provider at providerURL, with basic auth; it returns the gateway's URL
// and a faas-cli runner aimed at it.
func startGateway(t *testing.T, tools map[string]string, providerURL string, creds *auth.BasicAuthCredentials) (string, func(stdin string, args ...string) (string, error)) {
	t.Helper()
	secrets := t.TempDir()
	os.WriteFile(filepath.Join(secrets, "basic-auth-user"), []byte(creds.User), 0o600)
	os.WriteFile(filepath.Join(secrets, "basic-auth-password"), []byte(creds.Password), 0o600)
	promPort := freePort(t)
	promCfg := filepath.Join(t.TempDir(), "prometheus.yml")
	os.WriteFile(promCfg, []byte("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: [\"127.0.0.1:8082\"]\n"), 0o644)
	daemon(t, "prometheus", tools["prometheus"], nil, "--config.file="+promCfg,
		"--storage.tsdb.path="+t.TempDir(), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort))
	waitFor(t, "prometheus", 30*time.Second, func() bool { return httpOK(fmt.Sprintf("http://127.0.0.1:%d/-/ready", promPort)) })
	daemon(t, "gateway", tools["openfaas-gateway"], []string{
		"functions_provider_url=" + providerURL, "basic_auth=true", "secret_mount_path=" + secrets,
		"scale_from_zero=true", "function_namespace=" + Namespace,
		"faas_prometheus_host=127.0.0.1", fmt.Sprintf("faas_prometheus_port=%d", promPort),
		"read_timeout=180s", "write_timeout=180s", "upstream_timeout=170s",
	})
	const gw = "http://127.0.0.1:8080"
	waitFor(t, "gateway", 30*time.Second, func() bool { return httpOK(gw + "/healthz") })
	home := t.TempDir()
	return gw, func(stdin string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(tools["faas-cli"], args...)
		cmd.Env = append(os.Environ(), "OPENFAAS_URL="+gw, "OPENFAAS_CONFIG="+home, "HOME="+home)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		t.Logf("$ faas-cli %s\n%s", strings.Join(args, " "), out)
		return string(out), err
	}
}

// post sends body to url as a client of the gateway would.
func post(t *testing.T, url string, body []byte) (*http.Response, []byte) {
	t.Helper()
	res, err := http.Post(url, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return p != "" && err == nil
}
