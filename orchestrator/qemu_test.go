package orchestrator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/e2e/qemutest"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/httpguard"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/protocol"
)

// qemuWorker is the x86 worker with the built-in functions only.
func qemuWorker(t *testing.T) builder.BootFiles {
	t.Helper()
	return qemutest.Worker(t, nil)
}

func startQEMUCluster(t *testing.T, workers int, cfg orchestrator.Config) *qemutest.Cluster {
	t.Helper()
	return qemutest.Start(t, qemutest.Options{Workers: workers, Worker: qemuWorker(t), Config: cfg})
}

func TestQEMUBurstLargerThanCluster(t *testing.T) {
	c := startQEMUCluster(t, 2, orchestrator.Config{})
	const n = 7
	var invs []*orchestrator.Invocation
	for i := 0; i < n; i++ {
		inv, err := c.Orch.Submit("cascading_md5", json.RawMessage(fmt.Sprintf(`{"data":"burst-%d","rounds":3}`, i)), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		invs = append(invs, inv)
	}
	workers := map[string]int{}
	for i, inv := range invs {
		select {
		case <-inv.Done():
		case <-time.After(3 * time.Minute):
			t.Fatalf("invocation %d never finished: %+v", i, c.Orch.Status())
		}
		if inv.Err != nil || inv.Attempts != 1 {
			t.Errorf("invocation %d: err %v attempts %d", i, inv.Err, inv.Attempts)
		}
		workers[inv.Worker]++
	}
	if len(workers) != 2 {
		t.Errorf("jobs ran on %v; both workers should have served", workers)
	}
}

func TestQEMUWorkerKilledMidJob(t *testing.T) {
	working := make(chan string, 8) // workers that started a job
	c := startQEMUCluster(t, 2, orchestrator.Config{MaxAttempts: 3, OnStateChange: func(sc state.Change) {
		if sc.To == state.Working {
			select {
			case working <- sc.Worker:
			default:
			}
		}
	}})
	// Long enough under TCG to be caught running: millions of rounds.
	inv, err := c.Orch.Submit("cascading_sha256", json.RawMessage(`{"data":"killme","rounds":3000000}`), 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var victim string
	select {
	case victim = <-working:
	case <-time.After(2 * time.Minute):
		t.Fatalf("no worker started the job: %+v", c.Orch.Status())
	}
	// Pull the plug: kill the VM's qemu process, as a power cut would.
	if err := c.QEMU.PowerOff(context.Background(), cluster.Worker{ID: victim}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inv.Done():
	case <-time.After(4 * time.Minute):
		t.Fatalf("retried invocation never finished: %+v", c.Orch.Status())
	}
	if inv.Err != nil {
		t.Fatalf("retried invocation failed: %v", inv.Err)
	}
	if inv.Attempts != 2 {
		t.Errorf("attempts = %d, want 2 (the killed one and the retry)", inv.Attempts)
	}
	if !strings.Contains(c.Logs.String(), "invocation lost its worker") {
		t.Error("the lost attempt was not logged")
	}
	t.Logf("killed %s mid-job; the retry ran on %s", victim, inv.Worker)
}

// TestQEMUUnknownWorkerTurnedAway boots a VM whose id is not in the
// orchestrator's inventory (it holds a key derived for its id from the
// cluster secret): its handshake is refused, and its VM exits.
func TestQEMUUnknownWorkerTurnedAway(t *testing.T) {
	c := startQEMUCluster(t, 1, orchestrator.Config{})
	w := qemuWorker(t)
	ghost := cluster.Worker{ID: "ghost", Kind: cluster.KindVM, IP: "10.0.2.15"}
	other := *c.Cluster
	other.Workers = []cluster.Worker{ghost}
	q, err := power.NewQEMU(context.Background(), power.QEMUConfig{Kernel: w.Kernel, Initrd: w.Initramfs,
		Cluster: &other, LogDir: t.TempDir(), Failsafe: 60})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	exited := make(chan struct{})
	q.OnExit(func(string, error) { close(exited) })
	if err := q.PowerOn(context.Background(), ghost); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(2 * time.Minute):
		t.Fatal("the unknown worker's VM did not power off")
	}
	if !strings.Contains(c.Logs.String(), `refused worker connection`) || !strings.Contains(c.Logs.String(), protocol.ErrUnknownWorker.Error()) {
		t.Errorf("refusal not logged:\n%s", c.Logs.String())
	}
}

// TestQEMUMforchKilledLosesNothing runs mforch serve with a queue database,
// submits invocations, kills mforch with SIGKILL while work is queued and
// running, starts it again, and finds every accepted invocation finished.
func TestQEMUMforchKilledLosesNothing(t *testing.T) {
	w := qemuWorker(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "mforch")
	repo, _ := builder.FindRepo(".")
	build := exec.Command("go", "build", "-o", bin, "./cmd/mforch")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build mforch: %v\n%s", err, out)
	}
	port := freePort(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", port)
	serve := func(name string) *exec.Cmd {
		logf, _ := os.Create(filepath.Join(dir, name+".log"))
		t.Cleanup(func() {
			if t.Failed() {
				b, _ := os.ReadFile(filepath.Join(dir, name+".log"))
				t.Logf("%s log:\n%s", name, b)
			}
		})
		cmd := exec.Command(bin, "serve", "--workers", "2", "--kernel", w.Kernel, "--initrd", w.Initramfs,
			"--store", filepath.Join(dir, "queue.db"), "--results", filepath.Join(dir, "results.csv"),
			"--http", fmt.Sprintf("127.0.0.1:%d", port), "--log-dir", dir, "--openfaas-auth", filepath.Join(dir, "auth"), "--bundles", filepath.Join(dir, "bundles"))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitHTTP(t, api+"/healthz")
		return cmd
	}
	first := serve("first")
	// mforch generated its API credentials there; send them.
	creds, err := httpguard.ReadCredentials(filepath.Join(dir, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	api = fmt.Sprintf("http://%s:%s@127.0.0.1:%d", creds.User, creds.Password, port)
	var ids []string
	for i := 0; i < 6; i++ {
		resp, err := http.Post(fmt.Sprintf("%s/invoke/cascading_sha256?async=true", api), "application/json",
			strings.NewReader(fmt.Sprintf(`{"data":"restart-%d","rounds":200000}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		var r orchestrator.InvokeResponse
		json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || r.ID == "" {
			t.Fatalf("async submit: %s %+v", resp.Status, r)
		}
		ids = append(ids, r.ID)
	}
	// Let the workers boot and start jobs, then kill mforch outright.
	waitFor(t, 2*time.Minute, func() bool { return status(t, api).Running > 0 })
	// The first mforch's own QEMU processes, so the check below cannot
	// mistake the second mforch's workers (still exiting after their last
	// job) for orphans.
	orphans := childQEMUs(t, first.Process.Pid)
	if len(orphans) == 0 {
		t.Fatal("the first mforch runs no qemu process; the kill below would test nothing")
	}
	first.Process.Signal(syscall.SIGKILL)
	first.Wait()
	time.Sleep(500 * time.Millisecond) // the kernel kills the orphaned qemus (Pdeathsig)
	second := serve("second")
	defer func() { second.Process.Signal(syscall.SIGTERM); second.Wait() }()
	restarted := 0
	for _, id := range ids {
		var r orchestrator.InvokeResponse
		waitFor(t, 4*time.Minute, func() bool {
			r = get(t, api+"/invocations/"+id)
			return r.Status == "finished"
		})
		if r.Error != "" {
			t.Errorf("invocation %s failed after the restart: %s", id, r.Error)
		}
		restarted += r.Restarts
	}
	if restarted == 0 {
		t.Error("no invocation was pending across the restart; the test did not test anything")
	}
	t.Logf("%d of %d invocations survived the kill and ran after the restart", restarted, len(ids))
	for _, pid := range orphans {
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(cmdline), "qemu-system") {
			t.Errorf("qemu process %d left behind by the killed mforch", pid)
		}
	}
}

// childQEMUs lists the QEMU processes whose parent is pid.
func childQEMUs(t *testing.T, pid int) []int {
	t.Helper()
	out, err := exec.Command("pgrep", "-P", fmt.Sprint(pid), "qemu-system").Output()
	if err != nil && len(out) > 0 {
		t.Fatalf("pgrep: %v", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		var p int
		fmt.Sscan(f, &p)
		pids = append(pids, p)
	}
	return pids
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitHTTP(t *testing.T, url string) {
	waitFor(t, time.Minute, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func status(t *testing.T, api string) orchestrator.Status {
	var s orchestrator.Status
	resp, err := http.Get(api + "/status")
	if err != nil {
		return s
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&s)
	return s
}

func get(t *testing.T, url string) orchestrator.InvokeResponse {
	var r orchestrator.InvokeResponse
	resp, err := http.Get(url)
	if err != nil {
		return r
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &r)
	return r
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestQEMURebootWhileQueued runs two jobs on one QEMU worker under
// reboot-while-queued, full and snapshot boots: after the first the worker
// is told to reboot, its guest resets (qemu exits: -no-reboot), the
// orchestrator powers it on again at once, and the new boot takes the
// queued job. The worker never counts as stopping or off in between.
func TestQEMURebootWhileQueued(t *testing.T) {
	for _, boot := range []string{power.BootFull, power.BootSnapshot} {
		t.Run(boot, func(t *testing.T) {
			changes := make(chan state.Change, 64)
			c := qemutest.Start(t, qemutest.Options{Workers: 1, Worker: qemuWorker(t),
				QEMU: power.QEMUConfig{Boot: boot, SnapshotDir: t.TempDir()},
				Config: orchestrator.Config{Policy: map[string]cluster.Policy{cluster.KindVM: {Name: cluster.PolicyRebootWhileQueued}},
					OnStateChange: func(sc state.Change) { changes <- sc }}})
			var invs []*orchestrator.Invocation
			for i := range 2 {
				inv, err := c.Orch.Submit("cascading_md5", json.RawMessage(fmt.Sprintf(`{"data":"reboot-%d","rounds":3}`, i)), time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				invs = append(invs, inv)
			}
			for i, inv := range invs {
				select {
				case <-inv.Done():
				case <-time.After(3 * time.Minute):
					t.Fatalf("invocation %d never finished: %+v\n%s", i, c.Orch.Status(), c.Logs.String())
				}
				if inv.Err != nil || inv.Attempts != 1 {
					t.Fatalf("invocation %d: err %v attempts %d", i, inv.Err, inv.Attempts)
				}
			}
			first, second := invs[0], invs[1]
			if second.PoweredOn.Before(first.Finished) {
				t.Errorf("the second job's boot began %s, before the first finished %s: not a new boot", second.PoweredOn, first.Finished)
			}
			// From the first job to the second: working -> booting -> idle -> working.
			var path []string
			for len(path) < 4 {
				select {
				case sc := <-changes:
					if sc.From == state.Working || len(path) > 0 {
						path = append(path, string(sc.From)+">"+string(sc.To))
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("state changes after the first job: %v", path)
				}
			}
			want := []string{"working>booting", "booting>idle", "idle>working", "working>stopping"}
			if fmt.Sprint(path) != fmt.Sprint(want) {
				t.Errorf("state changes %v, want %v (a reboot, not a power off)", path, want)
			}
			for _, line := range []string{"rebooting worker for queued work", "worker reset for its reboot"} {
				if !strings.Contains(c.Logs.String(), line) {
					t.Errorf("log lacks %q", line)
				}
			}
			if boot == power.BootSnapshot && !strings.Contains(c.Logs.String(), "worker snapshot saved") {
				t.Error("no snapshot was saved: the boots were not snapshot boots")
			}
			if n := strings.Count(c.Logs.String(), "qemu started"); n < 2 {
				t.Errorf("qemu started %d times, want a second start after the reset", n)
			}
			t.Logf("%s: first finished %s, second powered on %s, connected %s", boot,
				first.Finished.Format("15:04:05.000"), second.PoweredOn.Format("15:04:05.000"), second.Connected.Format("15:04:05.000"))
		})
	}
}
