package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/testfn"
	"github.com/microfaas/microfaas/internal/testlog"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/target"
)

func repo(t *testing.T) string {
	t.Helper()
	r, err := builder.FindRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// worker builds (or takes from the cache) the x86 worker for QEMU tests.
// The first run builds the kernel (minutes); later runs hit the cache.
func worker(t *testing.T) builder.BootFiles {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the worker kernel and boots QEMU")
	}
	o := builder.Options{RepoDir: repo(t), Arch: target.X86, Cache: cache.Cache{Dir: cache.DefaultDir()}}
	w, err := builder.BuildWorker(context.Background(), o, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestQEMUSmoke boots the built bzImage and initramfs in a QEMU microvm with
// the real orchestrator in this process, runs cascading_sha256 and checks the
// digest and that the VM exited.
func TestQEMUSmoke(t *testing.T) {
	w := worker(t)
	res, err := Smoke(context.Background(), target.X86, w, "auto", nil)
	if err != nil {
		if b, rerr := os.ReadFile(res.ConsoleLog); rerr == nil {
			t.Logf("worker console:\n%s", b)
		}
		t.Fatal(err)
	}
	t.Logf("accel %s: uptime at init %.0f ms, network %.0f ms, connected %.0f ms; power-on to result %.0f ms",
		res.Accel, res.Boot.InitMS, res.Boot.NetworkMS, res.Boot.ConnectedMS, res.WallMS)
	if res.Boot.InitMS <= 0 || res.Boot.ConnectedMS < res.Boot.InitMS {
		t.Errorf("implausible boot timings: %+v", res.Boot)
	}
	checkSessionPort(t, res.ConsoleLog)
}

// checkSessionPort checks in a worker's console log that its session ran
// over its virtio-serial port, not TCP through the relay (power.SessionPort).
func checkSessionPort(t *testing.T, consoleLog string) {
	t.Helper()
	b, err := os.ReadFile(consoleLog)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"connected to the orchestrator" addr=vport:` + power.SessionPort; !strings.Contains(string(b), want) {
		t.Errorf("the console log lacks %q: the session did not run over the port\n%s", want, b)
	}
}

// BenchmarkQEMUBoot measures power-on to result for one cold QEMU worker.
func BenchmarkQEMUBoot(b *testing.B) {
	o := builder.Options{RepoDir: ".", Arch: target.X86, Cache: cache.Cache{Dir: cache.DefaultDir()}}
	r, err := builder.FindRepo(".")
	if err != nil {
		b.Fatal(err)
	}
	o.RepoDir = r
	w, err := builder.BuildWorker(context.Background(), o, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	var init, conn, wall float64
	for i := 0; i < b.N; i++ {
		res, err := Smoke(context.Background(), target.X86, w, "auto", nil)
		if err != nil {
			b.Fatal(err)
		}
		init += res.Boot.InitMS
		conn += res.Boot.ConnectedMS
		wall += res.WallMS
	}
	n := float64(b.N)
	b.ReportMetric(init/n, "init-ms")
	b.ReportMetric(conn/n, "connected-ms")
	b.ReportMetric(wall/n, "poweron-to-result-ms")
}

func buildWordcount(t *testing.T, goarch string) []byte {
	return testfn.Wordcount(t, repo(t), goarch)
}

func makeImage(t *testing.T, arch string, files map[string][]byte, symlinks map[string]string, entrypoint ...string) v1.Image {
	return testfn.Image(t, arch, files, symlinks, entrypoint...)
}

// TestQEMUSnapshotSmoke runs the smoke job twice on snapshot boots: the
// first power-on saves the worker (booted to where it waits for its
// identity), both restore that file, get their identity on the console and
// answer correctly. It checks the restores are told apart: their own ids,
// restore times after the snapshot's boot, and the kernel's RNG reseeded
// (different hello nonces: both restores start from one RNG state).
func TestQEMUSnapshotSmoke(t *testing.T) {
	w := worker(t)
	runs, err := SmokeWith(context.Background(), target.X86, w, SmokeOptions{Accel: "auto",
		Boot: power.BootSnapshot, Runs: 2, SnapshotDir: t.TempDir()})
	if err != nil {
		if len(runs) > 0 {
			if b, rerr := os.ReadFile(runs[len(runs)-1].ConsoleLog); rerr == nil {
				t.Logf("worker console:\n%s", b)
			}
		}
		t.Fatal(err)
	}
	for i, res := range runs {
		t.Logf("restore %d (accel %s): snapshot's boot reached the network at %.0f ms; restored at %.0f, connected at %.0f ms of uptime; power-on to result %.0f ms",
			i, res.Accel, res.Boot.NetworkMS, res.Boot.RestoredMS, res.Boot.ConnectedMS, res.WallMS)
		if res.Boot.RestoredMS <= res.Boot.NetworkMS || res.Boot.ConnectedMS < res.Boot.RestoredMS {
			t.Errorf("restore %d: implausible boot timings for a restore: %+v", i, res.Boot)
		}
		if b, err := os.ReadFile(res.ConsoleLog); err == nil && strings.Contains(string(b), protocol.IdentityPrefix) {
			t.Errorf("restore %d: the identity line (with the key) is in the console log", i)
		}
		checkSessionPort(t, res.ConsoleLog)
	}
}

// snapshotRig is one snapshot-booting QEMU worker whose orchestrator side
// a test speaks itself, on ln.
type snapshotRig struct {
	q               *power.QEMU
	cl              *cluster.Cluster
	ln              net.Listener
	logDir, snapDir string
	exits           chan string     // a worker's qemu exited
	log             *testlog.Buffer // the controller's log, also on stderr
}

// waitOff waits, on the controller's exit events, until the rig's worker
// is not running.
func (r *snapshotRig) waitOff(t *testing.T, what string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for r.q.Running(r.cl.Workers[0].ID) {
		select {
		case <-r.exits:
		case <-deadline:
			t.Fatalf("%s: the VM did not power off within %s", what, timeout)
		}
	}
}

func newSnapshotRig(t *testing.T) *snapshotRig {
	w := worker(t)
	r := &snapshotRig{cl: cluster.Local(1), logDir: t.TempDir(), snapDir: t.TempDir(), exits: make(chan string, 16), log: &testlog.Buffer{}}
	var err error
	if r.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.ln.Close() })
	r.cl.Network.Port = r.ln.Addr().(*net.TCPAddr).Port
	r.q, err = power.NewQEMU(context.Background(), power.QEMUConfig{Arch: target.X86, Kernel: w.Kernel, Initrd: w.Initramfs,
		Accel: "auto", Cluster: r.cl, LogDir: r.logDir, Failsafe: 30, Boot: power.BootSnapshot, SnapshotDir: r.snapDir,
		Log: slog.New(slog.NewTextHandler(io.MultiWriter(os.Stderr, r.log), nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.q.Close)
	r.q.OnExit(func(id string, _ error) {
		select {
		case r.exits <- id:
		default: // waitOff checks Running after every event; a full buffer has one to wake it
		}
	})
	return r
}

// keys is the orchestrator's key lookup for the rig's cluster.
func (r *snapshotRig) keys(id string, _ net.Addr) ([]byte, error) {
	return protocol.WorkerKey(r.cl.SecretBytes(), id)
}

// TestQEMUSnapshotReseeds restores one snapshot twice and speaks the
// protocol with each restore directly, to see what only the handshake
// shows: each authenticates with its own key (delivered after the restore)
// and draws a different hello nonce, although both start from the same
// saved kernel RNG state. (It cannot prove the worker's RNDRESEEDCRNG ran:
// with the snapshot taken ~1 s after boot, the kernel's own early-boot
// reseed schedule and RDRAND also tell the restores apart, as a run with
// the reseed removed showed. runtime's TestReseed runs the ioctls.)
func TestQEMUSnapshotReseeds(t *testing.T) {
	r := newSnapshotRig(t)
	q, cl, ln, logDir, keys, vm := r.q, r.cl, r.ln, r.logDir, r.keys, r.cl.Workers[0]
	var nonces []string
	for i := 0; i < 2; i++ {
		if err := q.PowerOn(context.Background(), vm); err != nil {
			t.Fatal(err)
		}
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Minute))
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("restore %d never connected: %v (console: %s)", i, err, q.LogPath(vm.ID))
		}
		pc, hello, err := protocol.ServerHandshake(c, c.RemoteAddr(), keys)
		if err != nil {
			t.Fatalf("restore %d: handshake: %v", i, err)
		}
		if hello.WorkerID != vm.ID || hello.Boot.RestoredMS <= 0 {
			t.Errorf("restore %d: hello from %q with boot times %+v", i, hello.WorkerID, hello.Boot)
		}
		nonces = append(nonces, hello.Nonce)
		pc.Send(protocol.TypeCommand, protocol.Command{Action: protocol.CmdPowerOff})
		c.Close()
		r.waitOff(t, fmt.Sprintf("restore %d", i), 30*time.Second)
		// The key was typed on the console: it must not have echoed.
		key, _ := protocol.WorkerKey(cl.SecretBytes(), vm.ID)
		for _, f := range []string{q.LogPath(vm.ID), filepath.Join(logDir, "snapshot.log")} {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), hex.EncodeToString(key)) || strings.Contains(string(b), protocol.IdentityPrefix) {
				t.Fatalf("restore %d: the identity or the key is in the console log %s", i, f)
			}
		}
	}
	if nonces[0] == nonces[1] {
		t.Fatalf("two restores drew the same hello nonce %s: the kernel RNG was not reseeded", nonces[0])
	}
}

// TestQEMUSnapshotCorruptFile: a saved VM that qemu cannot load (here cut
// in half) costs one failed power-on, not every one after: the file is
// removed and the next power-on saves a new one and connects.
func TestQEMUSnapshotCorruptFile(t *testing.T) {
	r := newSnapshotRig(t)
	q, ln, snapDir, keys, vm := r.q, r.ln, r.snapDir, r.keys, r.cl.Workers[0]
	waitOff := func(what string) { r.waitOff(t, what, 60*time.Second) }
	connect := func(what string) {
		if err := q.PowerOn(context.Background(), vm); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Minute))
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("%s: never connected: %v", what, err)
		}
		defer c.Close()
		pc, _, err := protocol.ServerHandshake(c, c.RemoteAddr(), keys)
		if err != nil {
			t.Fatalf("%s: handshake: %v", what, err)
		}
		pc.Send(protocol.TypeCommand, protocol.Command{Action: protocol.CmdPowerOff})
		waitOff(what)
	}
	connect("first power-on (saves the snapshot)")
	files, _ := filepath.Glob(filepath.Join(snapDir, "*.vmstate"))
	if len(files) != 1 {
		t.Fatalf("snapshot files %v, want one", files)
	}
	fi, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(files[0], fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	if err := q.PowerOn(context.Background(), vm); err != nil {
		t.Fatal(err)
	}
	waitOff("restore of the cut file")
	// The restore removes the file once it has learnt why qemu exited,
	// which may be just after the exit is reported: wait for its word.
	r.log.WaitFor(t, "a snapshot failed to load; removed", 30*time.Second)
	if _, err := os.Stat(files[0]); !os.IsNotExist(err) {
		t.Fatalf("the snapshot qemu could not load is still there: %v", err)
	}
	connect("power-on after the removal (saves it again)")
}
