package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	goruntime "runtime"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The direct path, for root (a worker's PID 1): no helper process. The
// worker builds the run's root under RunDir itself, and starts the
// function from a thread of its own that has no_new_privs and an empty
// capability bounding set (the child inherits both), with new mount, PID and
// UTS namespaces, chrooted into that root, as its uid. The function is
// PID 1 of its namespace: when it exits, the kernel kills whatever it left.
// Re-executing the worker binary as a helper would cost a Go start-up per
// call (about 90 ms under TCG).

// RunDir holds the roots of running functions (owner-only; each root is a
// private tmpfs, unmounted when its run ends).
var RunDir = "/run/mf-sandbox"

var (
	runDirOnce sync.Once
	runDirErr  error

	spawnOnce sync.Once
	spawnErr  error
	spawnReq  chan spawnJob
)

type spawnJob struct {
	cmd  *exec.Cmd
	done chan error
}

// spawner runs on a locked thread that drops what a function must not
// have; the Go runtime starts new threads from a clean template thread,
// so the rest of the worker keeps its privileges.
func spawner() {
	goruntime.LockOSThread() // never unlocked: the thread dies with its state
	spawnErr = dropPrivileges()
	for j := range spawnReq {
		if spawnErr != nil {
			j.done <- spawnErr
			continue
		}
		j.done <- j.cmd.Start()
	}
}

// prepareRunDir makes RunDir a private mount of its own, so the roots
// mounted below it never propagate to other mount namespaces of the host.
func prepareRunDir() error {
	if err := os.MkdirAll(RunDir, 0o700); err != nil {
		return err
	}
	// Once per machine boot: later processes (tests) find it mounted.
	if !mountPoint(RunDir) {
		if err := unix.Mount(RunDir, RunDir, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("sandbox run directory %s: %w", RunDir, err)
		}
	}
	return unix.Mount("", RunDir, "", unix.MS_PRIVATE, "")
}

// mountPoint reports whether dir is a mount point (in /proc/self/mountinfo).
func mountPoint(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// Prepare does the one-time set-up of the direct path (the private run
// directory, the spawner thread) now rather than in the first job: the
// worker calls it while it connects, off a cold start's critical path.
// Calling it is optional and harmless off a worker.
func Prepare() error {
	if Available() != Full {
		return nil
	}
	runDirOnce.Do(func() { runDirErr = prepareRunDir() })
	spawnOnce.Do(func() {
		spawnReq = make(chan spawnJob)
		go spawner()
	})
	return runDirErr
}

// runDirect runs spec as described above and returns cmd.Wait's error.
func runDirect(ctx context.Context, spec Spec, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := Prepare(); err != nil {
		return err
	}
	// A fresh name: several processes (parallel tests) may share RunDir.
	root, err := os.MkdirTemp(RunDir, "run-")
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	defer func() {
		// Detach the whole tree at once (binds, /proc, secrets), then the
		// mount point.
		unix.Unmount(root, unix.MNT_DETACH)
		os.Remove(root)
	}()
	if err := buildRoot(root, spec, procHidePID); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	cmd := exec.CommandContext(ctx, spec.Path)
	cmd.Args, cmd.Env, cmd.Dir = spec.Args, spec.Env, spec.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     root,
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS,
		Credential: &syscall.Credential{Uid: spec.UID, Gid: spec.GID, Groups: []uint32{}},
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
	}
	// The function is its namespace's init: killing it kills the rest.
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	// exec resolved the path against our root: use it as given, inside.
	cmd.Path, cmd.Err = spec.Path, nil
	done := make(chan error, 1)
	spawnReq <- spawnJob{cmd, done}
	if err := <-done; err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("sandbox: start %s: %w (does the kernel have CONFIG_PID_NS and CONFIG_UTS_NS?)", spec.Path, err)
		}
		return fmt.Errorf("sandbox: start %s: %w", spec.Path, err)
	}
	return cmd.Wait()
}
