package power

// Snapshot boots (QEMUConfig.Boot = BootSnapshot). A worker is booted once
// with mf.snapshot=1: it does everything that does not depend on who it is
// (kernel boot, mounts, network, the function sandbox), prints
// protocol.SnapshotReadyMarker and waits for its identity on the console.
// The VM is then saved with QMP's migrate into a file in SnapshotDir that
// this process opened and passed to qemu (getfd, "fd:"; no shell). Every
// later power-on starts a fresh qemu that restores that file (opened
// read-only, "-incoming fd:3": one pristine file serves every restore, so
// no invocation sees another's state), resumes it, and types the identity on its console: worker id, the
// orchestrator's address, the worker's own key, the time and a fresh seed
// for the kernel's RNG.
//
// The saved file is named by a hash of everything the saved VM depends on
// (kernel and initramfs bytes, qemu's version, the accelerator, the whole
// qemu command line and kernel command line), so a new image or a new qemu
// makes a new snapshot and an old one is never restored into it. The
// command line names no worker and no orchestrator port, and workers on
// QEMU's user networking get no MAC of their own in a snapshot (nothing
// sees it), so they all share one; a tap worker has its own (its IP and
// MAC are in it). A snapshot that fails to load is removed, so the next
// power-on saves it again. Saving one
// removes the folder's snapshots unused for snapshotKeep (each use touches
// its file); one removed while in use is saved again.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/protocol"
)

// Boot modes (QEMUConfig.Boot).
const (
	BootFull     = "full"
	BootSnapshot = "snapshot"
)

// snapshotHostname is ip='s hostname in a snapshot: the saved VM is shared
// by workers, so it names none of them.
const snapshotHostname = "worker"

// snapshotBootTimeout bounds the one boot that makes a snapshot.
const snapshotBootTimeout = 2 * time.Minute

// snapshotKeep is how long an unused snapshot stays in SnapshotDir.
const snapshotKeep = 7 * 24 * time.Hour

// ErrSnapshot means a snapshot could not be made or restored.
var ErrSnapshot = errors.New("snapshot boot failed")

// snapshots is the per-controller state of snapshot boots.
type snapshots struct {
	mu    sync.Mutex           // one snapshot is made at a time; guards the rest
	stamp string               // the image files' names, sizes and times base was hashed for
	base  string               // hash of kernel, initramfs and qemu version
	qemu  []byte               // qemu --version
	used  map[string]time.Time // when this controller last touched each file
	seq   atomic.Uint64        // QMP socket names
}

// DefaultSnapshotDir is where saved VMs go unless QEMUConfig.SnapshotDir says.
func DefaultSnapshotDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "microfaas", "snapshots")
}

// checkSnapshotConfig is NewQEMU's check of the snapshot settings.
func (q *QEMU) checkSnapshotConfig() error {
	switch q.cfg.Boot {
	case "", BootFull:
		return nil
	case BootSnapshot:
	default:
		return fmt.Errorf("qemu boot %q: want %s or %s", q.cfg.Boot, BootFull, BootSnapshot)
	}
	if !q.cfg.Arch.QEMU.Snapshot {
		return fmt.Errorf("%w: %s workers cannot boot from a snapshot yet: use --boot %s", ErrSnapshot, q.cfg.Arch, BootFull)
	}
	if q.cfg.SnapshotDir == "" {
		q.cfg.SnapshotDir = DefaultSnapshotDir()
	}
	if err := os.MkdirAll(q.cfg.SnapshotDir, 0o700); err != nil {
		return fmt.Errorf("%w: snapshot folder: %v", ErrSnapshot, err)
	}
	return nil
}

// qmpSocket is a fresh QMP socket path for one qemu. Worker ids have no
// '_', so no two names collide.
func (q *QEMU) qmpSocket(name string) string {
	return filepath.Join(q.keyDir, fmt.Sprintf("qmp_%s_%d.sock", name, q.snap.seq.Add(1)))
}

// snapshotBase hashes what every snapshot of this controller depends on:
// the kernel's and initramfs's bytes and qemu's version. It is computed
// again when an image file changes (rebuilt while mforch runs). Call with
// snap.mu held.
func (q *QEMU) snapshotBase() (string, error) {
	var stamp strings.Builder
	files := []string{q.cfg.Kernel, q.cfg.Initrd}
	for _, f := range files {
		if f == "" {
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrSnapshot, err)
		}
		fmt.Fprintf(&stamp, "%s %d %d\x00", f, fi.Size(), fi.ModTime().UnixNano())
	}
	if q.snap.base != "" && q.snap.stamp == stamp.String() {
		return q.snap.base, nil
	}
	if q.snap.qemu == nil {
		v, err := exec.Command(q.cfg.Arch.QEMU.Binary, "--version").Output()
		if err != nil {
			return "", fmt.Errorf("%w: %s --version: %v", ErrSnapshot, q.cfg.Arch.QEMU.Binary, err)
		}
		q.snap.qemu = v
	}
	h := sha256.New()
	fmt.Fprintf(h, "microfaas snapshot v2\x00%s\x00%s\x00", q.cfg.Arch, q.accel)
	for _, f := range files {
		if f == "" {
			continue
		}
		if err := hashFile(h, f); err != nil {
			return "", fmt.Errorf("%w: %v", ErrSnapshot, err)
		}
		h.Write([]byte{0})
	}
	h.Write(q.snap.qemu)
	q.snap.stamp, q.snap.base = stamp.String(), hex.EncodeToString(h.Sum(nil))
	return q.snap.base, nil
}

func hashFile(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// snapshotArgs are the qemu arguments a snapshot of worker w is saved and
// restored with: the worker's, with the snapshot command line and, on user
// networking, no MAC of its own.
func (q *QEMU) snapshotArgs(w cluster.Worker) ([]string, error) {
	cmdline, err := q.cmdline(w, true)
	if err != nil {
		return nil, err
	}
	if w.VM.Net != "tap" {
		w.MAC = ""
	}
	// The session port's devices, whether this controller's boots use it
	// or not, on a null chardev: the restore gives it that boot's socket.
	port := ""
	if w.UsesUserNet() && q.cfg.Arch.QEMU.SessionPort {
		port = "null"
	}
	// No guestfwd rule (they name the worker port): the restore adds them.
	return qemuArgs(q.cfg.Arch, q.accel, q.cfg.Kernel, q.cfg.Initrd, w, cmdline, "", port), nil
}

// snapshotFor returns the saved VM worker w restores from, and its qemu
// arguments, saving it first when there is none yet.
func (q *QEMU) snapshotFor(ctx context.Context, w cluster.Worker) (string, []string, error) {
	args, err := q.snapshotArgs(w)
	if err != nil {
		return "", nil, err
	}
	q.snap.mu.Lock()
	defer q.snap.mu.Unlock()
	base, err := q.snapshotBase()
	if err != nil {
		return "", nil, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", base, strings.Join(args, "\x00"))
	path := filepath.Join(q.cfg.SnapshotDir, hex.EncodeToString(h.Sum(nil))[:24]+".vmstate")
	if _, err := os.Stat(path); err == nil {
		// Touch it now and then, so pruning sees it is in use.
		if now := time.Now(); now.Sub(q.snap.used[path]) > time.Hour {
			os.Chtimes(path, now, now)
			q.snap.used[path] = now
		}
		return path, args, nil
	}
	start := time.Now()
	size, err := q.makeSnapshot(ctx, args, path)
	if err != nil {
		return "", nil, err
	}
	q.snap.used[path] = time.Now()
	q.cfg.Log.Info("worker snapshot saved", "file", path, "bytes", size, "took", time.Since(start).Round(time.Millisecond))
	pruneSnapshots(q.cfg.SnapshotDir, time.Now().Add(-snapshotKeep))
	return path, args, nil
}

// pruneSnapshots removes the saved VMs in dir last used before cutoff, and
// unfinished ones (.part) as old.
func pruneSnapshots(dir string, cutoff time.Time) {
	for _, pattern := range []string{"*.vmstate", "*.part"} {
		files, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil && fi.ModTime().Before(cutoff) {
				os.Remove(f)
			}
		}
	}
}

// makeSnapshot boots a VM with args, waits for the worker to say it is
// ready, saves the VM to path and ends it. It returns the file's size.
func (q *QEMU) makeSnapshot(ctx context.Context, args []string, path string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, snapshotBootTimeout)
	defer cancel()
	sock := q.qmpSocket("snapshot")
	defer os.Remove(sock)
	logPath := filepath.Join(q.cfg.LogDir, "snapshot.log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	defer logf.Close()
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s (console: %s)", ErrSnapshot, fmt.Sprintf(format, a...), logPath)
	}
	// The file is this process's (owner-only from the start, a unique
	// name: two savers never write one file); qemu gets it over QMP.
	part, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+"-*.part")
	if err != nil {
		return 0, fail("%v", err)
	}
	saved := false
	defer func() {
		part.Close()
		if !saved {
			os.Remove(part.Name())
		}
	}()
	cmd := exec.CommandContext(ctx, q.cfg.Arch.QEMU.Binary, append(args[:len(args):len(args)],
		"-qmp", "unix:"+sock+",server=on,wait=off")...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, fail("%v", err)
	}
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, fail("start qemu: %v", err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	ready, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		sc := bufio.NewScanner(io.TeeReader(out, logf))
		sc.Buffer(make([]byte, 4096), 1<<20)
		seen := false
		for sc.Scan() {
			if !seen && strings.Contains(sc.Text(), protocol.SnapshotReadyMarker) {
				seen = true
				close(ready)
			}
		}
		io.Copy(logf, out)
	}()
	select {
	case <-ready:
	case <-ended:
		return 0, fail("qemu ended before the worker was ready")
	case <-ctx.Done():
		return 0, fail("the worker did not get ready: %v", ctx.Err())
	}
	m, err := dialQMP(ctx, sock)
	if err != nil {
		return 0, fail("%v", err)
	}
	defer m.Close()
	// Paused first, so the file is one consistent state (no pages dirtied
	// while it is written); the restore resumes it with "cont".
	if _, err := m.do("stop", nil); err != nil {
		return 0, fail("%v", err)
	}
	if _, err := m.doFD("getfd", map[string]any{"fdname": "snapshot"}, part); err != nil {
		return 0, fail("%v", err)
	}
	if _, err := m.do("migrate", map[string]any{"uri": "fd:snapshot"}); err != nil {
		return 0, fail("%v", err)
	}
	for {
		st, desc, err := m.migration()
		if err != nil {
			return 0, fail("%v", err)
		}
		if st == "completed" {
			break
		}
		if st == "failed" || st == "cancelled" {
			return 0, fail("saving the VM: %s %s", st, desc)
		}
		select {
		case <-ctx.Done():
			return 0, fail("saving the VM: %v", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	// "completed": qemu wrote everything into the file (no pipe, no
	// helper process between). On disk before it gets its name.
	if err := part.Sync(); err != nil {
		return 0, fail("%v", err)
	}
	fi, err := part.Stat()
	if err != nil {
		return 0, fail("%v", err)
	}
	if err := os.Rename(part.Name(), path); err != nil {
		return 0, fail("%v", err)
	}
	saved = true
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return fi.Size(), nil
}

// restoration is one snapshot boot's restore: the qemu command and what
// runs once it started.
type restoration struct {
	cmd     *exec.Cmd
	state   *os.File // the saved VM, read-only: qemu's fd 3
	console io.WriteCloser
	sock    string
	path    string
	id      protocol.Identity // without Seed and NowUnixNS, filled at the restore
	log     func(msg string, args ...any)
}

// restoreCmd prepares the qemu command that restores worker w's snapshot;
// port, if set, is qemu's end of the worker's session port (fd 4).
func (q *QEMU) restoreCmd(ctx context.Context, w cluster.Worker, key []byte, port *os.File) (*restoration, error) {
	p, err := q.cfg.Cluster.BootParams(w)
	if err != nil {
		return nil, err
	}
	if port != nil {
		p.Orch = portOrch
	}
	path, args, err := q.snapshotFor(ctx, w)
	if err != nil {
		return nil, err
	}
	state, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	r := &restoration{state: state, sock: q.qmpSocket(w.ID), path: path, log: q.cfg.Log.Warn,
		id: protocol.Identity{ID: w.ID, Orch: p.Orch, Key: hex.EncodeToString(key)}}
	// The restored VM gets its forwards (netfwd.go); slirp's state in the
	// saved VM holds no connection, so the rules may differ from the save.
	args = slices.Clone(args)
	if i := slices.Index(args, "-netdev"); i >= 0 && w.VM.Net != "tap" {
		args[i+1] = q.netdev(w)
	}
	if port != nil {
		setChardev(args, socketBackend(4)) // state is fd 3
	}
	r.cmd = exec.Command(q.cfg.Arch.QEMU.Binary, append(args[:len(args):len(args)],
		"-qmp", "unix:"+r.sock+",server=on,wait=off", "-incoming", "fd:3")...)
	r.cmd.ExtraFiles = []*os.File{state}
	if port != nil {
		r.cmd.ExtraFiles = append(r.cmd.ExtraFiles, port)
	}
	if r.console, err = r.cmd.StdinPipe(); err != nil {
		state.Close()
		return nil, err
	}
	return r, nil
}

// started releases what qemu has inherited.
func (r *restoration) started() { r.state.Close() }

// close releases everything (qemu exited, or never started).
func (r *restoration) close() {
	r.state.Close()
	r.console.Close()
	os.Remove(r.sock)
}

// restore waits until qemu loaded the saved VM, resumes it and types the
// worker's identity on its console. life ends when qemu exits. A saved VM
// qemu could not load (it exited by itself while loading) is removed, so
// the next power-on saves a new one.
func (r *restoration) restore(life context.Context) error {
	defer r.console.Close()
	ctx, cancel := context.WithTimeout(life, snapshotBootTimeout)
	defer cancel()
	loaded := false
	fail := func(err error) error {
		if !loaded {
			// QMP often notices a dying qemu before its exit is reaped:
			// wait for the exit to learn how it ended.
			select {
			case <-life.Done():
			case <-time.After(5 * time.Second):
			}
		}
		var exit *qemuExit
		if !loaded && errors.As(context.Cause(life), &exit) && exit.self {
			os.Remove(r.path)
			r.log("a snapshot failed to load; removed, the next power-on saves it again", "file", r.path, "qemu", exit.err)
		}
		return fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	m, err := dialQMP(ctx, r.sock)
	if err != nil {
		return fail(err)
	}
	defer m.Close()
	for !loaded {
		st, err := m.status()
		if err != nil {
			return fail(err)
		}
		switch st {
		case "inmigrate":
			select {
			case <-ctx.Done():
				return fail(fmt.Errorf("restoring %s: %w", r.path, ctx.Err()))
			case <-time.After(10 * time.Millisecond):
			}
		case "paused":
			// Saved paused, so loaded paused (QEMU 7.2): resume it.
			if _, err := m.do("cont", nil); err != nil {
				return fail(err)
			}
			loaded = true
		case "running":
			loaded = true
		default:
			return fail(fmt.Errorf("restored VM is %q", st))
		}
	}
	seed := make([]byte, protocol.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return err
	}
	id := r.id
	id.Seed, id.NowUnixNS = hex.EncodeToString(seed), time.Now().UnixNano()
	if _, err := r.console.Write(protocol.EncodeIdentity(id)); err != nil {
		return fmt.Errorf("%w: typing the identity: %v", ErrSnapshot, err)
	}
	return nil
}
