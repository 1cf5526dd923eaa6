package security

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/e2e/qemutest"
	"github.com/microfaas/microfaas/orchestrator"
)

// hostileImages are image functions (folders under /functions, as mfbuild
// lays them out) with symlinks where the sandbox mounts: name -> rootfs
// links. Each rootfs runs the attacker as /attacker; "victim" is an
// honest tenant's image.
var hostileImages = map[string]map[string]string{
	"victim":      nil,
	"hostile-tmp": {"tmp": "/functions/victim"},
	"hostile-var": {"var": "/"},
}

// withHostileImages returns a copy of the worker's initramfs with the
// images above appended as a second cpio archive (the kernel unpacks
// concatenated archives in order). They are added past mfbuild, which may
// refuse such links: the sandbox must hold even for a rootfs that got
// onto a worker some other way.
func withHostileImages(t *testing.T, initrd string) string {
	t.Helper()
	repo, err := builder.FindRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "attacker")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./runtime/sandbox/testdata/attacker")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the attacker: %v\n%s", err, out)
	}
	attacker, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "initramfs-hostile")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src, err := os.Open(initrd)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(f, src)
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The next archive starts on a 4-byte boundary; the kernel skips zeros.
	if _, err := f.Write(make([]byte, (4-n%4)%4)); err != nil {
		t.Fatal(err)
	}
	var recs []cpio.Record
	dir := func(name string) {
		recs = append(recs, cpio.Directory(name, 0o755))
	}
	for name, links := range hostileImages {
		root := "functions/" + name
		cfg := fmt.Sprintf(`{"entrypoint": ["/attacker"], "env": ["ROLE=%s"]}`, name)
		dir(root)
		recs = append(recs, cpio.StaticRecord([]byte(cfg), cpio.Info{Name: root + "/config.json", Mode: cpio.S_IFREG | 0o644}))
		dir(root + "/rootfs")
		recs = append(recs, cpio.StaticRecord(attacker, cpio.Info{Name: root + "/rootfs/attacker", Mode: cpio.S_IFREG | 0o755}))
		for l, target := range links {
			recs = append(recs, cpio.Symlink(root+"/rootfs/"+l, target))
		}
	}
	w := cpio.Newc.Writer(f)
	for i, r := range recs {
		r = cpio.MakeReproducible(r)
		r.Ino, r.NLink = uint64(1_000_000+i), 1
		if err := w.WriteRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestQEMUHostileRoots: issue 18's attacks 2 and 3 on a real worker, on
// one warm worker in a row. (1) An image with `tmp -> /functions/victim`
// runs; on the old sandbox the worker mounted a world-writable tmpfs over
// the victim's folder, for good. (2) A second hostile function tries to
// plant a config.json and binary there. (3) The victim runs with its
// secret: it must be the victim's own code that runs. (4) An image with
// `var -> /` must read nothing of the worker's /init, /proc or /functions.
// (5) A fork bomb and a memory bomb end at their limits and the worker
// goes on serving.
func TestQEMUHostileRoots(t *testing.T) {
	w := attackWorker(t)
	initrd := withHostileImages(t, w.Initramfs)
	c := qemutest.Start(t, qemutest.Options{Workers: 1, Worker: w, Initrd: initrd,
		Config: orchestrator.Config{IdleTimeout: time.Minute}})

	worker := ""
	// run invokes a function; a function's own failure is returned, not
	// fatal (a refused root is one).
	run := func(spec orchestrator.JobSpec) (report, string, error) {
		t.Helper()
		spec.Timeout = time.Minute
		inv := c.Invoke(t, spec)
		if worker == "" {
			worker = inv.Worker
		} else if inv.Worker != worker {
			t.Fatalf("%s went to %s, not the warm %s: the attack needs one worker", spec.Function, inv.Worker, worker)
		}
		if inv.Err != nil {
			return report{}, "", inv.Err
		}
		var out string
		if err := json.Unmarshal(inv.Result, &out); err != nil {
			t.Fatalf("%s: result %s: %v", spec.Function, inv.Result, err)
		}
		var r report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%s: report %q: %v", spec.Function, out, err)
		}
		return r, out, nil
	}

	// 1. The image with tmp -> /functions/victim runs; its /tmp is its own.
	r, _, err := run(orchestrator.JobSpec{Function: "hostile-tmp", Args: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatalf("hostile-tmp: %v (a symlinked /tmp is replaced, not refused)", err)
	}
	if r.Wrote["/tmp/.leftover"] != "ok" {
		t.Errorf("hostile-tmp: its own /tmp is not writable: %q", r.Wrote["/tmp/.leftover"])
	}

	// 2. Another function (a plain binary, which sees /functions) tries to
	// plant a function in the victim's folder.
	r, _, err = run(orchestrator.JobSpec{Function: "attacker",
		Args: json.RawMessage(`{"plant": "/functions/victim", "write": ["/functions/victim/x"]}`)})
	if err != nil {
		t.Fatalf("attacker: %v", err)
	}
	t.Logf("planting in the victim's folder: %q; writing there: %q", r.Wrote["/functions/victim"], r.Wrote["/functions/victim/x"])
	if r.Wrote["/functions/victim"] == "ok" || r.Wrote["/functions/victim/x"] == "ok" {
		t.Errorf("a function could write into another tenant's folder: plant %q, write %q",
			r.Wrote["/functions/victim"], r.Wrote["/functions/victim/x"])
	}

	// 3. The victim's own code runs, with its secret.
	const secret = "VICTIM-SECRET-91b3"
	r, out, err := run(orchestrator.JobSpec{Function: "victim",
		Args:    json.RawMessage(`{"read": ["/var/openfaas/secrets/token"]}`),
		Secrets: map[string][]byte{"token": []byte(secret)}})
	if err != nil {
		t.Fatalf("victim: %v", err)
	}
	env := strings.Join(r.Environ, " ")
	if strings.Contains(env, "PLANTED=1") || !strings.Contains(env, "ROLE=victim") {
		t.Errorf("the victim's call ran someone else's code (environment %q), with its secret: %v",
			env, strings.Contains(out, secret))
	}
	if r.Reads["/var/openfaas/secrets/token"] != secret {
		t.Errorf("the victim could not read its own secret: %q", r.Reads["/var/openfaas/secrets/token"])
	}

	// 4. var -> /: refused, or at least blind to the worker.
	r, out, err = run(orchestrator.JobSpec{Function: "hostile-var",
		Args: json.RawMessage(`{"read": ["/var/init", "/var/proc/cmdline", "/var/proc/1/environ", "/var/functions/victim/config.json", "/var/functions"]}`)})
	if err != nil {
		t.Logf("hostile-var refused: %v", err)
		if !strings.Contains(err.Error(), "symlink") {
			t.Errorf("hostile-var failed, but not for its symlinked /var: %v", err)
		}
	} else {
		for _, p := range []string{"/var/init", "/var/proc/cmdline", "/var/proc/1/environ", "/var/functions/victim/config.json", "/var/functions"} {
			if !strings.HasPrefix(r.Reads[p], "ERR") {
				t.Errorf("hostile-var read the worker's %s: %.200q", strings.TrimPrefix(p, "/var"), r.Reads[p])
			}
		}
		if strings.Contains(out, "ROLE=victim") {
			t.Error("hostile-var read the victim's config")
		}
	}

	// 5. A fork bomb and a memory bomb on the same warm worker, with the
	// default limits: each stops at its limit, the run fails, and the
	// worker (PID 1) serves the victim's next call.
	for _, bomb := range []struct{ name, req string }{
		{"fork bomb", `{"forkbomb": 5000}`},
		{"memory bomb", `{"membomb": 1073741824}`},
	} {
		start := time.Now()
		_, _, err := run(orchestrator.JobSpec{Function: "attacker", Args: json.RawMessage(bomb.req)})
		t.Logf("%s: the run ended after %v: %v", bomb.name, time.Since(start).Round(time.Millisecond), err)
		if err == nil || !strings.Contains(err.Error(), "exit status 3") {
			t.Errorf("%s: %v; want the run failed by the bomb's limit (exit status 3)", bomb.name, err)
		}
		start = time.Now()
		if _, _, err := run(orchestrator.JobSpec{Function: "victim", Args: json.RawMessage(`{}`)}); err != nil {
			t.Errorf("the victim after the %s: %v", bomb.name, err)
		}
		t.Logf("the victim's call after the %s took %v", bomb.name, time.Since(start).Round(time.Millisecond))
	}
}
