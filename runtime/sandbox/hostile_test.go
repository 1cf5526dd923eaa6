package sandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/runtime/sandbox"
	"golang.org/x/sys/unix"
)

// hostileRoot makes an image rootfs holding the attacker at /attacker and
// the given top-level symlinks.
func hostileRoot(t *testing.T, bin string, links map[string]string) string {
	t.Helper()
	root := t.TempDir()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "attacker"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// mounted reports whether dir is a mount point in this process's namespace
// (the thread's: /proc/self is the main thread's, which a run could have
// taken into its own namespace).
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// unmountAll removes what a sandbox wrongly mounted on dir (old code), so
// one failing case does not spoil the next.
func unmountAll(t *testing.T, dir string) {
	for i := 0; i < 20 && mounted(t, dir); i++ {
		unix.Unmount(dir, unix.MNT_DETACH)
	}
}

// contained runs the attacker and returns its report (if it printed one)
// and the run's error.
func contained(t *testing.T, spec sandbox.Spec, req string) (report, error, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := sandbox.Run(ctx, spec, strings.NewReader(req), &stdout, &stderr)
	var r report
	if stdout.Len() > 0 {
		if jerr := json.Unmarshal(stdout.Bytes(), &r); jerr != nil {
			t.Fatalf("attacker output %q: %v", stdout.String(), jerr)
		}
	}
	return r, err, stderr.String()
}

// TestHostileRootSymlinks: attacks 2 and 3 of issue 18. An image whose
// tmp, dev or proc is a symlink to another tenant's folder made the worker
// mount a world-writable tmpfs (or a proc) over that folder, in the
// worker's own mount namespace, where it outlived the job; `var -> /`
// showed the function the worker's whole root. A symlink where the
// sandbox mounts must neither reach outside the root nor show it.
func TestHostileRootSymlinks(t *testing.T) {
	if sandbox.Available() == sandbox.None {
		t.Skip("no containment on this machine")
	}
	bin := buildAttacker(t)
	keyDir := t.TempDir()
	key := filepath.Join(keyDir, "key")
	if err := os.WriteFile(key, []byte("THE-WORKER-KEY"), 0o400); err != nil {
		t.Fatal(err)
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil || len(bytes.TrimSpace(cmdline)) == 0 {
		t.Fatalf("this machine's /proc/cmdline (the test needs it non-empty): %q, %v", cmdline, err)
	}
	const victimMark = "VICTIM-CONFIG-7d1e"
	tests := []struct {
		name    string
		links   map[string]string // "VICTIM" stands for the other tenant's folder
		secrets string            // SecretsDir; "" the default
		refused bool              // the run must fail with ErrUnsafeRoot
	}{
		{name: "tmp to another tenant's folder", links: map[string]string{"tmp": "VICTIM"}},
		{name: "tmp through ..", links: map[string]string{"tmp": "../../../../../../../../../..VICTIM"}},
		{name: "dev to another tenant's folder", links: map[string]string{"dev": "VICTIM"}},
		{name: "proc to another tenant's folder", links: map[string]string{"proc": "VICTIM"}},
		{name: "var to another tenant's folder", links: map[string]string{"var": "VICTIM"}, refused: true},
		{name: "var to the machine's root", links: map[string]string{"var": "/"}, refused: true},
		{name: "all at once", links: map[string]string{"tmp": "VICTIM", "dev": "VICTIM", "proc": "VICTIM", "var": "/"}, refused: true},
		{name: "secrets path's parent", links: map[string]string{"etc2": "VICTIM"}, secrets: "/etc2/secrets", refused: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			victim := t.TempDir()
			if err := os.WriteFile(filepath.Join(victim, "config.json"), []byte(victimMark), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unmountAll(t, victim) })
			links := map[string]string{}
			for k, v := range tt.links {
				links[k] = strings.ReplaceAll(v, "VICTIM", victim)
			}
			root := hostileRoot(t, bin, links)
			spec := sandbox.Spec{Root: root, Path: "/attacker", UID: sandbox.Nobody, GID: sandbox.Nobody,
				Secrets: map[string][]byte{"token": []byte("s3cr3t")}, SecretsDir: tt.secrets}
			req, _ := json.Marshal(map[string]any{"read": []string{"/var" + key, "/var" + keyDir, "/var/proc/cmdline",
				"/var/proc/1/environ", "/var" + victim + "/config.json", "/var/init", "/var/etc/hostname"},
				"write": []string{"/tmp/planted", "/dev/planted", "/var/planted"}})
			r, err, stderr := contained(t, spec, string(req))

			if mounted(t, victim) {
				t.Errorf("the run left a mount over the other tenant's folder %s in the worker's namespace", victim)
			}
			ents, _ := os.ReadDir(victim)
			if b, _ := os.ReadFile(filepath.Join(victim, "config.json")); string(b) != victimMark || len(ents) != 1 {
				t.Errorf("the other tenant's folder changed: %d entries, config.json %q", len(ents), b)
			}
			out, _ := json.Marshal(r)
			for _, leak := range []string{"THE-WORKER-KEY", victimMark, strings.TrimSpace(string(cmdline))} {
				if bytes.Contains(out, []byte(leak)) {
					t.Errorf("the function read %q from outside its root: reads %v", leak, r.Reads)
				}
			}
			if tt.refused {
				// The helper (user namespace) reports on its stderr.
				helperRefused := sandbox.Available() == sandbox.UserNS && err != nil && strings.Contains(stderr, sandbox.ErrUnsafeRoot.Error())
				if !errors.Is(err, sandbox.ErrUnsafeRoot) && !helperRefused {
					t.Errorf("run: %v (stderr %q); want it refused with ErrUnsafeRoot", err, stderr)
				}
				t.Logf("refused: %v %s", err, strings.TrimSpace(stderr))
				return
			}
			if err != nil {
				t.Fatalf("run: %v\n%s", err, stderr)
			}
			if r.Wrote["/tmp/planted"] != "ok" {
				t.Errorf("its own /tmp is not writable: %q", r.Wrote["/tmp/planted"])
			}
		})
	}
}

// TestReadOnlyBindsRecursive: a read-only bind of a tree with a mount
// below it made only the top read-only (issue 18, attack 2, the part that
// let a second function write into a tmpfs a first one left behind).
// Both ways of making a tree read-only are tried: mount_setattr
// (Linux 5.12+) and remounting each submount (older kernels).
func TestReadOnlyBindsRecursive(t *testing.T) {
	if sandbox.Available() != sandbox.Full {
		t.Skip("needs root (a worker's functions are started by root)")
	}
	bin := buildAttacker(t)
	for _, fallback := range []bool{false, true} {
		name := map[bool]string{false: "mount_setattr", true: "remount each"}[fallback]
		t.Run(name, func(t *testing.T) {
			defer sandbox.SetRemountFallback(fallback)()
			root := hostileRoot(t, bin, nil)
			sub := filepath.Join(root, "data", "sub")
			if err := os.MkdirAll(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "mode=1777,size=1m"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unmountAll(t, sub) })
			spec := sandbox.Spec{Root: root, Path: "/attacker", UID: sandbox.Nobody, GID: sandbox.Nobody}
			r, err, stderr := contained(t, spec, `{"write": ["/data/sub/planted"]}`)
			if err != nil {
				t.Fatalf("run: %v\n%s", err, stderr)
			}
			if got := r.Wrote["/data/sub/planted"]; got == "ok" || !strings.Contains(got, "read-only") {
				t.Errorf("writing to a mount below a read-only bind: %q; want read-only file system", got)
			}
		})
	}
}

// TestBombsContained: a fork bomb, a memory bomb, a /tmp filler and a
// descriptor hog each end with the run failing, stopped by its limit,
// while this process (standing in for the worker's PID 1) keeps starting
// programs without delay.
func TestBombsContained(t *testing.T) {
	if sandbox.Available() == sandbox.None {
		t.Skip("no containment on this machine")
	}
	bin := buildAttacker(t)
	const mib = 1 << 20
	tests := []struct {
		name   string
		limits sandbox.Limits
		req    string
		within func(b bombReport) (int64, int64) // how far it got, its limit
	}{
		{"fork bomb", sandbox.Limits{Procs: 32, Nice: 19}, `{"forkbomb": 1000}`,
			func(b bombReport) (int64, int64) { return int64(b.Forked), 32 }},
		{"fork bomb, default limits", sandbox.Limits{}, `{"forkbomb": 2000}`,
			func(b bombReport) (int64, int64) { return int64(b.Forked), int64(sandbox.DefaultLimits().Procs) }},
		{"memory bomb", sandbox.Limits{Memory: 128 * mib}, `{"membomb": 1073741824}`,
			func(b bombReport) (int64, int64) { return b.Allocated, 128 * mib }},
		{"/tmp filler", sandbox.Limits{Tmp: 32 * mib}, `{"filltmp": 268435456}`,
			func(b bombReport) (int64, int64) { return b.TmpWritten, 32 * mib }},
		{"file size", sandbox.Limits{FileSize: 8 * mib}, `{"filltmp": 67108864}`,
			func(b bombReport) (int64, int64) { return b.TmpWritten, 8 * mib }},
		{"descriptor hog", sandbox.Limits{Files: 64}, `{"openfiles": 100000}`,
			func(b bombReport) (int64, int64) { return int64(b.OpenFiles), 64 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := sandbox.Spec{Path: bin, Binds: []string{bin}, UID: sandbox.Nobody, GID: sandbox.Nobody, Limits: tt.limits}
			probe := startProbe(t)
			start := time.Now()
			r, err, stderr := contained(t, spec, tt.req)
			took := time.Since(start)
			starts, worst, perr := probe()
			t.Logf("%s: the run ended after %v; meanwhile this process started %d programs, the slowest in %v",
				tt.name, took.Round(time.Millisecond), starts, worst.Round(time.Millisecond))
			if perr != nil {
				t.Errorf("this process could not start a program during the bomb: %v", perr)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Errorf("run: %v (stderr %q); want the bomb stopped by its limit (exit 3)", err, stderr)
			}
			if r.Bomb == nil {
				t.Fatalf("no bomb report (stderr %q)", stderr)
			}
			got, limit := tt.within(*r.Bomb)
			if got > limit {
				t.Errorf("the bomb got to %d, past its limit %d: %+v", got, limit, *r.Bomb)
			}
			t.Logf("%s: got to %d of its limit %d: %+v", tt.name, got, limit, *r.Bomb)
		})
	}
}

// startProbe starts programs one after another until stopped, as the
// worker would go on doing its own work; stopping returns how many it
// started, the slowest start, and the first error.
func startProbe(t *testing.T) func() (int, time.Duration, error) {
	t.Helper()
	stop := make(chan struct{})
	type result struct {
		n     int
		worst time.Duration
		err   error
	}
	done := make(chan result)
	go func() {
		var res result
		for {
			select {
			case <-stop:
				done <- res
				return
			default:
			}
			t0 := time.Now()
			if err := exec.Command("/bin/true").Run(); err != nil && res.err == nil {
				res.err = err
			}
			res.n++
			res.worst = max(res.worst, time.Since(t0))
		}
	}()
	return func() (int, time.Duration, error) {
		close(stop)
		r := <-done
		return r.n, r.worst, r.err
	}
}

// TestNothingMountedInWorkerNamespace: each run builds its root in a
// mount namespace of its own, so after runs (with secrets, binds and an
// image) the worker's namespace has nothing of theirs, on any thread.
func TestNothingMountedInWorkerNamespace(t *testing.T) {
	if sandbox.Available() != sandbox.Full {
		t.Skip("needs root (a worker's functions are started by root)")
	}
	bin := buildAttacker(t)
	root := hostileRoot(t, bin, nil)
	for i := 0; i < 4; i++ {
		for _, spec := range []sandbox.Spec{
			{Path: bin, Binds: []string{bin}, UID: sandbox.Nobody, GID: sandbox.Nobody, Secrets: map[string][]byte{"k": []byte("v")}},
			{Root: root, Path: "/attacker", UID: sandbox.Nobody, GID: sandbox.Nobody, Secrets: map[string][]byte{"k": []byte("v")}},
		} {
			if _, err, stderr := contained(t, spec, "{}"); err != nil {
				t.Fatalf("run: %v\n%s", err, stderr)
			}
		}
	}
	// /proc/self is the main thread's: a run must not have kept it.
	for _, f := range []string{"/proc/self/mountinfo", "/proc/thread-self/mountinfo"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			// A bind of RunDir onto itself is what older versions made
			// once per boot; a run's root is a tmpfs there, or below.
			fields := strings.Fields(line)
			if len(fields) > 4 && (strings.HasPrefix(fields[4], sandbox.RunDir+"/") ||
				fields[4] == sandbox.RunDir && strings.Contains(line, " - tmpfs ")) {
				t.Errorf("%s: a run's mount is in the worker's namespace: %s", f, line)
			}
		}
	}
}
