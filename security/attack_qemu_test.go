package security

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/e2e/qemutest"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/protocol"
)

// attackWorker is the x86 worker with the attacker function in its
// initramfs.
func attackWorker(t *testing.T) builder.BootFiles {
	t.Helper()
	return qemutest.Worker(t, map[string]string{"attacker": "./runtime/sandbox/testdata/attacker"})
}

type report struct {
	UID, GID, PID int
	Hostname      string
	Status        map[string]string
	Environ       []string
	Reads         map[string]string
	BlockDevices  []string
	Processes     []string
	Wrote         map[string]string
	Lingering     string
}

// phoneHome collects what lingering attackers send.
type phoneHome struct {
	mu    sync.Mutex
	lines []string
	times []time.Time
}

func (p *phoneHome) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		p.mu.Lock()
		p.lines = append(p.lines, line)
		p.times = append(p.times, time.Now())
		p.mu.Unlock()
	}
}

func (p *phoneHome) after(t0 time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for i, at := range p.times {
		if at.After(t0) {
			out = append(out, p.lines[i])
		}
	}
	return out
}

// TestQEMUFunctionAttacks boots a real worker through the real orchestrator
// and runs the hostile function on it twice on the same warm worker: the
// first run tries to read the cluster secret and the worker's key and
// leaves a process behind; the second run is another tenant's job with a
// secret the leftover tries to steal.
func TestQEMUFunctionAttacks(t *testing.T) {
	w := attackWorker(t)
	home, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer home.Close()
	var calls phoneHome
	go calls.serve(home)
	// QEMU's user-mode network reaches the host's loopback only on the
	// ports the cluster names (power/netfwd.go): the phone-home port is
	// named as a service.
	var homeAddr string
	c := qemutest.Start(t, qemutest.Options{Workers: 1, Worker: w, Config: orchestrator.Config{IdleTimeout: time.Minute},
		Cluster: func(cl *cluster.Cluster) {
			homeAddr = fmt.Sprintf("%s:%d", cl.Network.Gateway, home.Addr().(*net.TCPAddr).Port)
			cl.Services = map[string]map[string]string{"phonehome": {"addr": homeAddr}}
		}})
	cl := c.Cluster

	run := func(spec orchestrator.JobSpec) *orchestrator.Invocation {
		t.Helper()
		inv := c.Invoke(t, spec)
		if inv.Err != nil {
			t.Fatalf("%s: %v", spec.Function, inv.Err)
		}
		return inv
	}

	// 1. The attacker reads what it can and leaves a process behind.
	secretHex := hex.EncodeToString(cl.SecretBytes())
	key, err := protocol.WorkerKey(cl.SecretBytes(), "vm0")
	if err != nil {
		t.Fatal(err)
	}
	keyHex := hex.EncodeToString(key)
	// It stays 1 s, so the leftover reports during the job: the network
	// path works, and silence afterwards means the leftover is dead.
	req := fmt.Sprintf(`{"linger": %q, "stay_ms": 1000}`, homeAddr)
	inv1 := run(orchestrator.JobSpec{Function: "attacker", Args: json.RawMessage(req), Timeout: time.Minute})
	end1 := time.Now()
	var out string
	if err := json.Unmarshal(inv1.Result, &out); err != nil {
		t.Fatalf("result %s: %v", inv1.Result, err)
	}
	var r report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("attacker report %q: %v", out, err)
	}
	t.Logf("attacker on %s: uid %d gid %d, CapEff %s, NoNewPrivs %s, processes %v, /proc/cmdline %q, /proc/1/environ %q, block devices %v, leftover pid %s",
		inv1.Worker, r.UID, r.GID, r.Status["CapEff"], r.Status["NoNewPrivs"], r.Processes, r.Reads["/proc/cmdline"],
		r.Reads["/proc/1/environ"], r.BlockDevices, r.Lingering)
	checks := []struct {
		what string
		ok   bool
		got  any
	}{
		{"runs as nobody", r.UID == 65534 && r.GID == 65534, []int{r.UID, r.GID}},
		{"no capabilities", r.Status["CapEff"] == "0000000000000000" && r.Status["CapBnd"] == "0000000000000000", r.Status},
		{"no_new_privs", r.Status["NoNewPrivs"] == "1", r.Status["NoNewPrivs"]},
		{"its own PID namespace (PID 1 there)", r.PID == 1, r.PID},
		{"no other process visible, the worker (PID 1) least", len(r.Processes) == 1 && !strings.HasPrefix(r.Processes[0], "1:"), r.Processes},
		{"the cluster secret appears nowhere it read", !strings.Contains(out, secretHex), "the secret's hex"},
		{"the worker's key appears nowhere it read", !strings.Contains(out, keyHex), "the key's hex"},
		{"the worker's key is not in QEMU's argv", !inQEMUArgv(t, keyHex), "the key's hex"},
		{"the cluster secret is not in QEMU's argv", !inQEMUArgv(t, secretHex), "the secret's hex"},
		{"kernel command line unreadable", strings.HasPrefix(r.Reads["/proc/cmdline"], "ERR"), r.Reads["/proc/cmdline"]},
		{"PID 1's environment unreadable", strings.HasPrefix(r.Reads["/proc/1/environ"], "ERR"), r.Reads["/proc/1/environ"]},
		{"no key file", strings.HasPrefix(r.Reads["/run/mf/key"], "ERR"), r.Reads["/run/mf/key"]},
		{"no block devices", len(r.BlockDevices) == 0, r.BlockDevices},
		{"no /sys", strings.HasPrefix(r.Reads["/sys/block"], "ERR"), r.Reads["/sys/block"]},
		{"the worker binary out of sight", strings.HasPrefix(r.Reads["/init"], "ERR"), len(r.Reads["/init"])},
		{"its files read-only", r.Wrote["/functions/.leftover"] != "ok", r.Wrote["/functions/.leftover"]},
		{"the leftover was started", r.Lingering != "" && !strings.HasPrefix(r.Lingering, "ERR"), r.Lingering},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: got %v", c.what, c.got)
		}
	}

	// 2. Another tenant's job with a secret, on the same warm worker; it
	// runs 1 s, time enough for a leftover polling every 100 ms.
	const tenantSecret = "TENANT-TWO-SECRET-5f2c"
	inv2 := run(orchestrator.JobSpec{Function: "attacker", Args: json.RawMessage(`{"read": ["/var/openfaas/secrets/token"], "stay_ms": 1000}`),
		Timeout: time.Minute, Secrets: map[string][]byte{"token": []byte(tenantSecret)}})
	if inv2.Worker != inv1.Worker {
		t.Fatalf("the second job went to %s, not the warm %s: the leftover test needs one worker", inv2.Worker, inv1.Worker)
	}
	if !strings.Contains(string(inv2.Result), tenantSecret) {
		t.Errorf("the tenant's own function could not read its secret: %s", inv2.Result)
	}
	time.Sleep(2 * time.Second) // the leftover reports every 100 ms
	late := calls.after(end1.Add(500 * time.Millisecond))
	t.Logf("calls home: %d in all, %d more than 500 ms after the first job ended", len(calls.after(time.Time{})), len(late))
	for _, l := range late {
		if strings.Contains(l, tenantSecret) {
			t.Errorf("the leftover process stole the next tenant's secret: %q", l)
		}
	}
	if len(late) > 0 {
		t.Errorf("a leftover process outlived its job and called home %d times", len(late))
	}
	if len(calls.after(time.Time{})) == 0 {
		t.Error("the leftover never called home, even during its job: the test cannot tell a dead leftover from a broken network")
	}
}

// inQEMUArgv reports whether any running QEMU's command line (what ps
// shows every user) contains s.
func inQEMUArgv(t *testing.T, s string) bool {
	t.Helper()
	found, seen := false, 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), "qemu-system") {
			continue
		}
		seen++
		found = found || strings.Contains(string(b), s)
	}
	if seen == 0 {
		t.Error("no QEMU process found to check the argv of")
	}
	return found
}
