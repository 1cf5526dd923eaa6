package natsq

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

	"github.com/microfaas/microfaas/e2e/qemutest"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/openfaas"
)

// TestQEMUGatewayTwoInstances runs two mforch instances, each with one
// QEMU worker, sharing one JetStream queue, behind an unmodified OpenFaaS
// gateway that knows only the first: faas-cli deploys through the gateway
// (onto the first instance), the second instance serves the function
// too, and calls through the gateway and through the second instance run
// on the QEMU workers of either.
func TestQEMUGatewayTwoInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU workers and runs the OpenFaaS gateway")
	}
	tools := map[string]string{}
	for _, name := range []string{"openfaas-gateway", "faas-cli", "prometheus"} {
		p, err := exec.LookPath(name)
		if d := os.Getenv("OPENFAAS_BIN_DIR"); d != "" {
			if q := filepath.Join(d, name); fileExists(q) {
				p, err = q, nil
			}
		}
		if err != nil {
			t.Skipf("OpenFaaS tool %s missing (scripts/openfaas/install.sh installs it)", name)
		}
		tools[name] = p
	}
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
	for _, port := range []string{":8080", ":8082"} { // the gateway's, whatever it is told
		ln, err := net.Listen("tcp", port)
		if err != nil {
			t.Skipf("the OpenFaaS gateway needs port %s, which is taken: %v", port, err)
		}
		ln.Close()
	}
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	worker := qemutest.Worker(t, nil)
	var urls []string
	var clusters []*qemutest.Cluster
	for i := 0; i < 2; i++ {
		q, err := Open(context.Background(), Options{URLs: ns.url(), Name: fmt.Sprintf("mforch%d", i), KeyFile: key, AckWait: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		c := qemutest.Start(t, qemutest.Options{Workers: 1, Worker: worker,
			Config: orchestrator.Config{Queue: q, PowerUpTimeout: 60 * time.Second}})
		t.Cleanup(func() { q.Close() }) // after the orchestrator's (cleanups run last first)
		st, err := q.State(context.Background(), "microfaas_openfaas")
		if err != nil {
			t.Fatal(err)
		}
		p, err := openfaas.New(openfaas.Config{Orchestrator: c.Orch, Shared: st})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(p.Handler())
		t.Cleanup(func() { srv.Close(); p.Close(context.Background()) })
		urls, clusters = append(urls, srv.URL), append(clusters, c)
	}
	promPort := freePort(t)
	promCfg := filepath.Join(t.TempDir(), "prometheus.yml")
	os.WriteFile(promCfg, []byte("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: [\"127.0.0.1:8082\"]\n"), 0o644)
	daemon(t, "prometheus", tools["prometheus"], nil, "--config.file="+promCfg,
		"--storage.tsdb.path="+t.TempDir(), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort))
	daemon(t, "gateway", tools["openfaas-gateway"], []string{
		"functions_provider_url=" + urls[0] + "/", "basic_auth=false", "scale_from_zero=true",
		"function_namespace=" + openfaas.Namespace,
		"faas_prometheus_host=127.0.0.1", fmt.Sprintf("faas_prometheus_port=%d", promPort),
		"read_timeout=90s", "write_timeout=90s", "upstream_timeout=80s"})
	const gw = "http://127.0.0.1:8080"
	eventually(t, "the gateway answers", func() bool {
		res, err := http.Get(gw + "/healthz")
		if err == nil {
			res.Body.Close()
		}
		return err == nil && res.StatusCode == 200
	})
	cliHome := t.TempDir()
	cli := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(tools["faas-cli"], args...)
		cmd.Env = append(os.Environ(), "OPENFAAS_URL="+gw, "OPENFAAS_CONFIG="+cliHome, "HOME="+cliHome)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		t.Logf("$ faas-cli %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			t.Fatalf("faas-cli %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	cli("", "deploy", "--image", "microfaas/cascading_sha256", "--name", "sha256")
	eventually(t, "the second instance lists the function deployed through the gateway", func() bool {
		res, err := http.Get(urls[1] + "/system/functions")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return strings.Contains(string(b), `"name":"sha256"`)
	})
	want := func(data string, rounds int) string {
		d := []byte(data)
		for i := 0; i < rounds; i++ {
			s := sha256.Sum256(d)
			d = s[:]
		}
		return hex.EncodeToString(d)
	}
	start := time.Now()
	if out := cli(`{"data":"gateway","rounds":100}`, "invoke", "sha256"); strings.TrimSpace(out) != want("gateway", 100) {
		t.Errorf("invoke through the gateway: %q", out)
	}
	t.Logf("call through the gateway (a QEMU boot, TCG): %s", time.Since(start).Round(time.Millisecond))
	res, err := http.Post(urls[1]+"/function/sha256", "application/json", strings.NewReader(`{"data":"second","rounds":100}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || strings.TrimSpace(string(b)) != want("second", 100) {
		t.Errorf("invoke through the second instance: %d %q", res.StatusCode, b)
	}
	var boots []int
	for _, c := range clusters {
		boots = append(boots, strings.Count(c.Logs.String(), "msg=\"worker powered on\""))
	}
	t.Logf("QEMU power-ons per instance: %v", boots)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// daemon starts a long-running program whose output goes to a file, and
// stops it when the test ends.
func daemon(t *testing.T, name, bin string, env []string, args ...string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = t.TempDir()
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
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("%s output:\n%s", name, b)
		}
	})
}
