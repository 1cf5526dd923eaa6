package sandbox_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microfaas/microfaas/runtime/sandbox"
)

// TestMain lets this test binary serve as the sandbox helper, as mfinit does.
func TestMain(m *testing.M) {
	sandbox.MaybeMain()
	os.Exit(m.Run())
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
	Bomb          *bombReport
}

type bombReport struct {
	Forked       int
	ForkErr      string
	Allocated    int64
	AllocErr     string
	TmpWritten   int64
	TmpErr       string
	OpenFiles    int
	OpenFilesErr string
}

// buildAttacker compiles the hostile function (testdata/attacker), static.
func buildAttacker(t *testing.T) string { return buildAttackerB(t) }

func buildAttackerB(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "attacker")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/attacker")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build attacker: %v\n%s", err, b)
	}
	return out
}

func runAttacker(t *testing.T, spec sandbox.Spec, req string) (report, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := sandbox.Run(ctx, spec, strings.NewReader(req), &stdout, &stderr); err != nil {
		t.Fatalf("attacker: %v\n%s", err, stderr.String())
	}
	end := time.Now()
	var r report
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("attacker output %q: %v", stdout.String(), err)
	}
	return r, end
}

// TestAttackerContained runs the hostile function contained, as root (as
// on a worker), and checks each thing it tries.
func TestAttackerContained(t *testing.T) {
	if sandbox.Available() != sandbox.Full {
		t.Skip("needs root (a worker's functions are started by root)")
	}
	bin := buildAttacker(t)
	// A file standing for the worker's key, outside what a function sees.
	keyDir := t.TempDir()
	key := filepath.Join(keyDir, "key")
	if err := os.WriteFile(key, []byte("THE-WORKER-KEY"), 0o400); err != nil {
		t.Fatal(err)
	}
	spec := sandbox.Spec{Path: bin, Binds: []string{bin}, Env: []string{"PATH=/bin", "GREETING=hi"},
		UID: sandbox.Nobody, GID: sandbox.Nobody, Secrets: map[string][]byte{"api-key": []byte("s3cr3t")}}
	req := `{"read": ["` + key + `", "` + keyDir + `", "/var/openfaas/secrets/api-key", "/proc/1/exe"]}`
	r, _ := runAttacker(t, spec, req)

	checks := []struct {
		what string
		ok   bool
		got  any
	}{
		{"runs as nobody", r.UID == sandbox.Nobody && r.GID == sandbox.Nobody, []int{r.UID, r.GID}},
		{"no effective capabilities", r.Status["CapEff"] == "0000000000000000", r.Status["CapEff"]},
		{"empty bounding set", r.Status["CapBnd"] == "0000000000000000", r.Status["CapBnd"]},
		{"no_new_privs", r.Status["NoNewPrivs"] == "1", r.Status["NoNewPrivs"]},
		{"its own PID namespace (it is PID 1 there)", r.PID == 1, r.PID},
		// Only processes of its own uid: here possibly other tests' functions
		// running as nobody at the same time (on a worker, jobs run one at
		// a time); never the machine's PID 1.
		{"no PID 1 visible, only processes of its uid", noPID1(r.Processes) && len(r.Processes) >= 1, r.Processes},
		{"environment is the job's only", len(r.Environ) == 2 && r.Environ[1] == "GREETING=hi", r.Environ},
		{"kernel command line unreadable", unreadable(r.Reads["/proc/cmdline"]), r.Reads["/proc/cmdline"]},
		{"PID 1's environment unreadable", strings.HasPrefix(r.Reads["/proc/1/environ"], "ERR"), r.Reads["/proc/1/environ"]},
		{"PID 1's root unreachable", strings.HasPrefix(r.Reads["/proc/1/root/run/mf/key"], "ERR"), r.Reads["/proc/1/root/run/mf/key"]},
		{"PID 1's binary unreachable", strings.HasPrefix(r.Reads["/proc/1/exe"], "ERR"), r.Reads["/proc/1/exe"]},
		{"key file out of sight", strings.HasPrefix(r.Reads[key], "ERR"), r.Reads[key]},
		{"key directory out of sight", strings.HasPrefix(r.Reads[keyDir], "ERR"), r.Reads[keyDir]},
		{"no /run", strings.HasPrefix(r.Reads["/run/mf/key"], "ERR"), r.Reads["/run/mf/key"]},
		{"no block devices", len(r.BlockDevices) == 0, r.BlockDevices},
		{"no /sys", strings.HasPrefix(r.Reads["/sys/block"], "ERR"), r.Reads["/sys/block"]},
		{"no /dev/mem", strings.HasPrefix(r.Reads["/dev/mem"], "ERR"), r.Reads["/dev/mem"]},
		{"partitions unreadable", unreadable(r.Reads["/proc/partitions"]), r.Reads["/proc/partitions"]},
		{"kernel keys unreadable", unreadable(r.Reads["/proc/keys"]), r.Reads["/proc/keys"]},
		{"its secret readable", r.Reads["/var/openfaas/secrets/api-key"] == "s3cr3t", r.Reads["/var/openfaas/secrets/api-key"]},
		{"root read-only", r.Wrote["/.leftover"] != "ok", r.Wrote["/.leftover"]},
		{"private /tmp writable", r.Wrote["/tmp/.leftover"] == "ok", r.Wrote["/tmp/.leftover"]},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: got %v", c.what, c.got)
		}
	}
}

func noPID1(procs []string) bool {
	for _, p := range procs {
		if strings.HasPrefix(p, "1:") {
			return false
		}
	}
	return true
}

// unreadable: an error, or nothing (a file masked by /dev/null).
func unreadable(s string) bool { return s == "" || strings.HasPrefix(s, "ERR") }

// listen collects the lines lingering attackers send, with arrival times.
func listen(t *testing.T) (string, chan time.Time) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan time.Time, 1000)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			bufio.NewReader(c).ReadString('\n')
			c.Close()
			select {
			case got <- time.Now():
			default:
			}
		}
	}()
	return ln.Addr().String(), got
}

// lateCalls counts calls home arriving later than grace after end, over window.
func lateCalls(got chan time.Time, end time.Time, grace, window time.Duration) int {
	n := 0
	timeout := time.After(time.Until(end.Add(window)))
	for {
		select {
		case at := <-got:
			if at.After(end.Add(grace)) {
				n++
			}
		case <-timeout:
			return n
		}
	}
}

// TestLeftoverProcessDies: a function leaves a process behind (its own
// session, double-detached); it must be dead when the run returns. The
// same attacker run as a plain child shows the attack works uncontained.
func TestLeftoverProcessDies(t *testing.T) {
	if sandbox.Available() == sandbox.None {
		t.Skip("no containment on this machine")
	}
	bin := buildAttacker(t)
	addr, got := listen(t)
	req := `{"linger": "` + addr + `"}`

	// Uncontained (what a worker did before): the leftover calls home.
	plain := exec.Command(bin)
	plain.Stdin = strings.NewReader(req)
	if err := plain.Run(); err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	if n := lateCalls(got, end, 100*time.Millisecond, time.Second); n == 0 {
		t.Fatal("the uncontained leftover never called home: the attack does not work, so the test proves nothing")
	}
	// Kill it: its pid is in the report line only; find it by exe.
	killByExe(t, bin)
	for len(got) > 0 {
		<-got
	}

	spec := sandbox.Spec{Path: bin, Binds: []string{bin}, UID: sandbox.Nobody, GID: sandbox.Nobody}
	// Contained, it stays 500 ms: its leftover calls home during the run.
	r, end := runAttacker(t, spec, `{"linger": "`+addr+`", "stay_ms": 500}`)
	if len(got) == 0 {
		t.Fatal("the contained leftover never called home during its run: the test cannot tell a dead leftover from a broken one")
	}
	for len(got) > 0 {
		<-got
	}
	if r.Lingering == "" || strings.HasPrefix(r.Lingering, "ERR") {
		t.Fatalf("the attacker could not start its leftover: %q", r.Lingering)
	}
	if n := lateCalls(got, end, 100*time.Millisecond, time.Second); n != 0 {
		killByExe(t, bin)
		t.Fatalf("a contained function's leftover process called home %d times after its run ended", n)
	}
}

// killByExe kills processes running exe (the uncontained leftover).
func killByExe(t *testing.T, exe string) {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if target, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && target == exe {
			var pid int
			if n, err := strconv.Atoi(e.Name()); err == nil {
				pid = n
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}
