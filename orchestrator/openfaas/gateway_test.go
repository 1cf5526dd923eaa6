package openfaas

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openfaas/faas-provider/auth"

	"github.com/microfaas/microfaas/bundle/oci"
	"github.com/microfaas/microfaas/internal/testfn"
	"github.com/microfaas/microfaas/orchestrator/deploy"
)

// openfaasTools are the OpenFaaS programs the gateway test runs, built by
// scripts/openfaas/install.sh (and Debian's prometheus package).
var openfaasTools = []string{"openfaas-gateway", "faas-cli", "nats-streaming-server", "openfaas-queue-worker", "prometheus"}

// lookTools finds the tools in $OPENFAAS_BIN_DIR, then $PATH.
func lookTools(t *testing.T) map[string]string {
	t.Helper()
	found := map[string]string{}
	var missing []string
	for _, name := range openfaasTools {
		if d := os.Getenv("OPENFAAS_BIN_DIR"); d != "" {
			if p := filepath.Join(d, name); isExec(p) {
				found[name] = p
				continue
			}
		}
		if p, err := exec.LookPath(name); err == nil {
			found[name] = p
			continue
		}
		missing = append(missing, name)
	}
	if len(missing) > 0 {
		t.Skipf("OpenFaaS tools missing: %s (scripts/openfaas/install.sh installs them)", strings.Join(missing, ", "))
	}
	return found
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// daemon starts a long-running program whose output goes to a file, and
// stops it when the test ends.
func daemon(t *testing.T, name, bin string, env []string, args ...string) (logPath string) {
	t.Helper()
	logPath = filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = t.TempDir()
	// Killed with the test binary if it dies, so nothing is left behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s output:\n%s", name, tail(b, 4000))
		}
	})
	return logPath
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitFor polls ok until it holds or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready after %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func httpOK(url string) bool {
	res, err := http.Get(url)
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == 200
}

// TestOpenFaaSGateway runs an unmodified OpenFaaS stack against the
// provider: the gateway (functions_provider_url pointed at it, basic auth,
// scale from zero), Prometheus scraping the gateway as in an OpenFaaS
// install, NATS Streaming with OpenFaaS's queue-worker for async calls, and
// faas-cli for deploy, list, invoke, describe, logs, secrets and remove. The
// workers are QEMU VMs, off until the gateway scales a function from zero.
func TestOpenFaaSGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU workers and runs the OpenFaaS gateway")
	}
	tools := lookTools(t)
	// The gateway's ports are fixed: one gateway test at a time, across
	// packages (orchestrator/openfaas and orchestrator/natsq).
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "microfaas-openfaas-gateway.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() }) // the last cleanup: after the gateway is gone
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	// The gateway listens on :8080 and :8082, whatever it is told.
	for _, port := range []string{":8080", ":8082"} {
		ln, err := net.Listen("tcp", port)
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("the OpenFaaS gateway needs port %s, which is taken: %v", port, err)
			}
			t.Skipf("the OpenFaaS gateway needs port %s, which is taken: %v", port, err)
		}
		ln.Close()
	}

	secrets := t.TempDir()
	creds := &auth.BasicAuthCredentials{User: "admin", Password: fmt.Sprintf("pw-%d", time.Now().UnixNano())}
	os.WriteFile(filepath.Join(secrets, "basic-auth-user"), []byte(creds.User), 0o600)
	os.WriteFile(filepath.Join(secrets, "basic-auth-password"), []byte(creds.Password), 0o600)

	// Run-time deploys as mforch serve has them, from a registry on
	// loopback holding an image with nothing for the x86 workers.
	host := testfn.Registry(t)
	armOnly := host + "/arm-only:1"
	testfn.Push(t, armOnly, testfn.Image(t, "arm", map[string][]byte{"f": []byte("x")}, nil, "/f"))
	store, err := deploy.New(deploy.Config{Dir: t.TempDir(), Resolver: &oci.Resolver{Insecure: []string{host}}})
	if err != nil {
		t.Fatal(err)
	}
	h, qemu := newQEMUHarness(t, 2, 0, Config{Auth: creds, Deploys: store, Archs: []string{"x86"}})
	provider := h.srv.URL + "/"

	promPort, natsPort := freePort(t), freePort(t)
	promCfg := filepath.Join(t.TempDir(), "prometheus.yml")
	os.WriteFile(promCfg, []byte("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: [\"127.0.0.1:8082\"]\n"), 0o644)
	daemon(t, "prometheus", tools["prometheus"], nil, "--config.file="+promCfg,
		"--storage.tsdb.path="+t.TempDir(), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort))
	daemon(t, "nats-streaming-server", tools["nats-streaming-server"], nil,
		"-a", "127.0.0.1", "-p", fmt.Sprint(natsPort), "-cid", "faas-cluster")
	waitFor(t, "prometheus", 30*time.Second, func() bool { return httpOK(fmt.Sprintf("http://127.0.0.1:%d/-/ready", promPort)) })
	waitFor(t, "nats", 30*time.Second, func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", natsPort))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	gwLog := daemon(t, "gateway", tools["openfaas-gateway"], []string{
		"functions_provider_url=" + provider, "basic_auth=true", "secret_mount_path=" + secrets,
		"scale_from_zero=true", "function_namespace=" + Namespace,
		"faas_nats_address=127.0.0.1", fmt.Sprintf("faas_nats_port=%d", natsPort),
		"faas_prometheus_host=127.0.0.1", fmt.Sprintf("faas_prometheus_port=%d", promPort),
		"read_timeout=90s", "write_timeout=90s", "upstream_timeout=80s",
	})
	const gw = "http://127.0.0.1:8080"
	waitFor(t, "gateway", 30*time.Second, func() bool { return httpOK(gw + "/healthz") })
	qwLog := daemon(t, "queue-worker", tools["openfaas-queue-worker"], []string{
		"faas_nats_address=127.0.0.1", fmt.Sprintf("faas_nats_port=%d", natsPort),
		"faas_gateway_address=127.0.0.1", "faas_gateway_port=8080",
	})
	waitFor(t, "queue-worker", 30*time.Second, func() bool {
		b, _ := os.ReadFile(qwLog)
		return bytes.Contains(b, []byte("Listening on"))
	})

	cliHome := t.TempDir()
	cli := func(stdin string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(tools["faas-cli"], args...)
		cmd.Env = append(os.Environ(), "OPENFAAS_URL="+gw, "OPENFAAS_CONFIG="+cliHome, "HOME="+cliHome)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		t.Logf("$ faas-cli %s\n%s", strings.Join(args, " "), out)
		return string(out), err
	}
	mustCLI := func(stdin string, want string, args ...string) string {
		t.Helper()
		out, err := cli(stdin, args...)
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("faas-cli %s: %v; want output containing %q", strings.Join(args, " "), err, want)
		}
		return out
	}

	mustCLI(creds.Password, "credentials saved", "login", "--username", creds.User, "--password-stdin")
	mustCLI("", "Deployed. 202 Accepted.", "deploy", "--image", "microfaas/cascading_sha256", "--name", "sha256")
	mustCLI("", "Deployed. 202 Accepted.", "deploy", "--image", "microfaas/fn:wordcount", "--name", "wordcount",
		"--env", "content_type=application/json", "--label", "team=docs")
	if out, err := cli("", "deploy", "--image", armOnly, "--name", "web"); err == nil || !strings.Contains(out, "400") || !strings.Contains(out, "linux/amd64") {
		t.Fatalf("deploying an image with nothing for the x86 workers: err %v; output %s", err, out)
	}
	out := mustCLI("", "sha256", "list")
	if !strings.Contains(out, "wordcount") || strings.Contains(out, "web") {
		t.Fatalf("list: %s", out)
	}

	// Scale from zero through the gateway: every worker is off.
	h.waitAllOff(30 * time.Second)
	start := time.Now()
	out = mustCLI(`{"data":"MicroFaaS","rounds":1000}`, sha("MicroFaaS", 1000), "invoke", "sha256")
	t.Logf("cold call through the gateway: %s", time.Since(start).Round(time.Millisecond))
	if strings.TrimSpace(out) != sha("MicroFaaS", 1000) {
		t.Fatalf("invoke sha256: %q", out)
	}
	gl, _ := os.ReadFile(gwLog)
	if !bytes.Contains(gl, []byte("function=sha256 0 => 1 requested")) || !bytes.Contains(gl, []byte("[Ready] function=sha256")) {
		t.Errorf("the gateway did not scale sha256 from zero:\n%s", tail(gl, 2000))
	}
	h.waitAllOff(30 * time.Second)
	mustCLI("one two three\nfour\n", `{"bytes":19,"lines":2,"words":4}`, "invoke", "wordcount")

	mustCLI("", "microfaas/cascading_sha256", "describe", "sha256")
	mustCLI("", "worker vm", "logs", "sha256", "--tail=false")
	mustCLI("", "Created", "secret", "create", "db-password", "--from-literal", "hunter2")
	mustCLI("", "db-password", "secret", "list")

	// Async, twice: through the gateway (NATS Streaming and the
	// queue-worker, which calls the gateway back) and straight to mforch.
	type callback struct{ path, status, callID, body string }
	got := make(chan callback, 8)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case got <- callback{r.URL.Path, r.Header.Get("X-Function-Status"), r.Header.Get("X-Call-Id"), string(b)}:
		default: // more callbacks than expected: the check below reports it
		}
	}))
	defer cb.Close()
	mustCLI(`{"data":"queued","rounds":3}`, "Function submitted asynchronously", "invoke", "sha256", "--async",
		"--header", "X-Callback-Url="+cb.URL+"/gateway-queue")
	req, _ := http.NewRequest("POST", h.srv.URL+"/async-function/sha256", strings.NewReader(`{"data":"direct","rounds":3}`))
	req.Header.Set("X-Callback-Url", cb.URL+"/mforch")
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != http.StatusAccepted {
		t.Fatalf("async call to mforch: %v %v", res, err)
	}
	res.Body.Close()
	want := map[string]string{"/gateway-queue": sha("queued", 3), "/mforch": sha("direct", 3)}
	for range 2 {
		select {
		case c := <-got:
			if c.status != "200" || c.body != want[c.path] || c.callID == "" {
				t.Errorf("callback %+v, want status 200 and %q", c, want[c.path])
			}
			t.Logf("callback %s: status %s, call id %s, body %s", c.path, c.status, c.callID, c.body)
			delete(want, c.path)
		case <-time.After(120 * time.Second):
			t.Fatalf("callbacks missing: %v", want)
		}
	}

	// The gateway counts invocations in Prometheus, which scrapes it every
	// second; faas-cli list shows the count.
	waitFor(t, "invocation count in faas-cli list", 30*time.Second, func() bool {
		out, _ := cli("", "list")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "sha256" && f[1] != "0" {
				return true
			}
		}
		return false
	})

	mustCLI("", "Removing old function", "remove", "sha256")
	if out := mustCLI("", "wordcount", "list"); strings.Contains(out, "sha256") {
		t.Errorf("sha256 still listed after remove: %s", out)
	}
	if out, err := cli("", "invoke", "sha256"); err == nil {
		t.Errorf("invoking a removed function succeeded: %s", out)
	}
	t.Logf("%d QEMU power-ons", qemu.powerOns.Load())
}
