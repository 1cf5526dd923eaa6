package power

// Snapshot boots (QEMUConfig.Boot = BootSnapshot). A worker is booted once
// with mf.snapshot=1: it does everything that does not depend on who it is
// (kernel boot, mounts, network, the function sandbox), prints
// protocol.SnapshotReadyMarker and waits for its identity on the console.
// The VM is then saved with QMP's migrate to a file in SnapshotDir. Every
// later power-on starts a fresh qemu that restores that file (read-only: one
// pristine file serves every restore, so no invocation sees another's
// state), resumes it, and types the identity on its console: worker id, the
// orchestrator's address, the worker's own key, the time and a fresh seed
// for the kernel's RNG.
//
// The saved file is named by a hash of everything the saved VM depends on
// (kernel and initramfs bytes, qemu's version, the accelerator, the whole
// qemu command line and kernel command line), so a new image or a new qemu
// makes a new snapshot and an old one is never restored into it. Saving one
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
	"strings"
	"sync"
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
	mu   sync.Mutex // one snapshot is made at a time
	once sync.Once
	base string // hash of kernel, initramfs and qemu version; "" until once ran
	err  error
	used map[string]time.Time // when this controller last touched each file
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
	if strings.ContainsAny(q.cfg.SnapshotDir, "'\n") {
		return fmt.Errorf("%w: snapshot folder %q: it must not hold a quote or newline (qemu saves through a shell)", ErrSnapshot, q.cfg.SnapshotDir)
	}
	if err := os.MkdirAll(q.cfg.SnapshotDir, 0o700); err != nil {
		return fmt.Errorf("%w: snapshot folder: %v", ErrSnapshot, err)
	}
	return nil
}

// snapshotBase hashes what every snapshot of this controller depends on:
// the kernel's and initramfs's bytes and qemu's version. Computed once.
func (q *QEMU) snapshotBase() (string, error) {
	q.snap.once.Do(func() {
		h := sha256.New()
		fmt.Fprintf(h, "microfaas snapshot v1\x00%s\x00%s\x00", q.cfg.Arch, q.accel)
		for _, f := range []string{q.cfg.Kernel, q.cfg.Initrd} {
			if f == "" {
				continue
			}
			file, err := os.Open(f)
			if err != nil {
				q.snap.err = fmt.Errorf("%w: %v", ErrSnapshot, err)
				return
			}
			_, err = io.Copy(h, file)
			file.Close()
			if err != nil {
				q.snap.err = fmt.Errorf("%w: %v", ErrSnapshot, err)
				return
			}
			h.Write([]byte{0})
		}
		v, err := exec.Command(q.cfg.Arch.QEMU.Binary, "--version").Output()
		if err != nil {
			q.snap.err = fmt.Errorf("%w: %s --version: %v", ErrSnapshot, q.cfg.Arch.QEMU.Binary, err)
			return
		}
		h.Write(v)
		q.snap.base = hex.EncodeToString(h.Sum(nil))
	})
	return q.snap.base, q.snap.err
}

// snapshotFor returns the saved VM worker w restores from, making it first
// when there is none yet.
func (q *QEMU) snapshotFor(ctx context.Context, w cluster.Worker) (string, []string, error) {
	base, err := q.snapshotBase()
	if err != nil {
		return "", nil, err
	}
	cmdline, err := q.cmdline(w, true)
	if err != nil {
		return "", nil, err
	}
	args := qemuArgs(q.cfg.Arch, q.accel, q.cfg.Kernel, q.cfg.Initrd, w, cmdline)
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", base, strings.Join(args, "\x00"))
	path := filepath.Join(q.cfg.SnapshotDir, hex.EncodeToString(h.Sum(nil))[:24]+".vmstate")

	q.snap.mu.Lock()
	defer q.snap.mu.Unlock()
	if _, err := os.Stat(path); err == nil {
		// Touch it now and then, so pruning sees it is in use.
		if now := time.Now(); now.Sub(q.snap.used[path]) > time.Hour {
			os.Chtimes(path, now, now)
			q.snap.used[path] = now
		}
		return path, args, nil
	}
	start := time.Now()
	if err := q.makeSnapshot(ctx, args, path); err != nil {
		return "", nil, err
	}
	q.snap.used[path] = time.Now()
	fi, _ := os.Stat(path)
	q.cfg.Log.Info("worker snapshot saved", "file", path, "bytes", fi.Size(), "took", time.Since(start).Round(time.Millisecond))
	pruneSnapshots(q.cfg.SnapshotDir, time.Now().Add(-snapshotKeep))
	return path, args, nil
}

// pruneSnapshots removes the saved VMs in dir last used before cutoff.
func pruneSnapshots(dir string, cutoff time.Time) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.vmstate"))
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.ModTime().Before(cutoff) {
			os.Remove(f)
		}
	}
}

// makeSnapshot boots a VM with args, waits for the worker to say it is
// ready, saves the VM to path and ends it.
func (q *QEMU) makeSnapshot(ctx context.Context, args []string, path string) error {
	ctx, cancel := context.WithTimeout(ctx, snapshotBootTimeout)
	defer cancel()
	sock := filepath.Join(q.keyDir, "qmp-snapshot.sock")
	os.Remove(sock)
	logPath := filepath.Join(q.cfg.LogDir, "snapshot.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	defer logf.Close()
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s (console: %s)", ErrSnapshot, fmt.Sprintf(format, a...), logPath)
	}
	cmd := exec.CommandContext(ctx, q.cfg.Arch.QEMU.Binary, append(args[:len(args):len(args)],
		"-qmp", "unix:"+sock+",server=on,wait=off")...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fail("%v", err)
	}
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fail("start qemu: %v", err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(io.TeeReader(out, logf))
		seen := false
		for sc.Scan() {
			if !seen && strings.HasPrefix(sc.Text(), protocol.SnapshotReadyMarker) {
				seen = true
				close(ready)
			}
		}
		io.Copy(logf, out)
	}()
	select {
	case <-ready:
	case <-ctx.Done():
		return fail("the worker did not get ready within %s", snapshotBootTimeout)
	}
	m, err := dialQMP(ctx, sock)
	if err != nil {
		return fail("%v", err)
	}
	defer m.Close()
	// Paused first, so the file is one consistent state (no pages dirtied
	// while it is written); the restore resumes it with "cont".
	if _, err := m.do("stop", nil); err != nil {
		return fail("%v", err)
	}
	tmp := path + ".part"
	if _, err := m.do("migrate", map[string]any{"uri": "exec:cat > '" + tmp + "'"}); err != nil {
		return fail("%v", err)
	}
	for {
		st, desc, err := m.migration()
		if err != nil {
			return fail("%v", err)
		}
		if st == "completed" {
			break
		}
		if st == "failed" || st == "cancelled" {
			os.Remove(tmp)
			return fail("saving the VM: %s %s", st, desc)
		}
		select {
		case <-ctx.Done():
			os.Remove(tmp)
			return fail("saving the VM: %v", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail("%v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail("%v", err)
	}
	return nil
}

// restoreCmd returns the qemu command that restores worker w's snapshot
// and the function to run once it started: resume the VM and type the
// worker's identity on its console.
func (q *QEMU) restoreCmd(ctx context.Context, w cluster.Worker, key []byte) (*exec.Cmd, func() error, error) {
	path, args, err := q.snapshotFor(ctx, w)
	if err != nil {
		return nil, nil, err
	}
	sock := filepath.Join(q.keyDir, "qmp-"+w.ID+".sock")
	os.Remove(sock)
	cmd := exec.Command(q.cfg.Arch.QEMU.Binary, append(args[:len(args):len(args)],
		"-qmp", "unix:"+sock+",server=on,wait=off", "-incoming", "exec:cat '"+path+"'")...)
	console, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	p, err := q.cfg.Cluster.BootParams(w)
	if err != nil {
		return nil, nil, err
	}
	restore := func() error {
		defer console.Close()
		defer os.Remove(sock)
		rctx, cancel := context.WithTimeout(context.Background(), snapshotBootTimeout)
		defer cancel()
		m, err := dialQMP(rctx, sock)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrSnapshot, err)
		}
		defer m.Close()
		for {
			st, err := m.status()
			if err != nil {
				return fmt.Errorf("%w: %v", ErrSnapshot, err)
			}
			if st == "paused" || st == "postmigrate" {
				if _, err := m.do("cont", nil); err != nil {
					return fmt.Errorf("%w: %v", ErrSnapshot, err)
				}
				break
			}
			if st == "running" {
				break
			}
			if st != "inmigrate" {
				return fmt.Errorf("%w: restored VM is %q", ErrSnapshot, st)
			}
			select {
			case <-rctx.Done():
				return fmt.Errorf("%w: restoring %s: %v", ErrSnapshot, path, rctx.Err())
			case <-time.After(2 * time.Millisecond):
			}
		}
		seed := make([]byte, protocol.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return err
		}
		id := protocol.Identity{ID: w.ID, Orch: p.Orch, Key: hex.EncodeToString(key), Seed: hex.EncodeToString(seed),
			NowUnixNS: time.Now().UnixNano()}
		if _, err := console.Write(protocol.EncodeIdentity(id)); err != nil {
			return fmt.Errorf("%w: typing the identity: %v", ErrSnapshot, err)
		}
		return nil
	}
	return cmd, restore, nil
}
