package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	goruntime "runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The direct path, for root (a worker's PID 1): no helper process. Each
// run gets an OS thread of its own, which leaves the worker's mount
// namespace (unshare), builds the run's root there, drops what a function
// must not have (no_new_privs, an empty capability bounding set: the
// child inherits both) and starts the function with new PID and UTS
// namespaces, chrooted into that root, as its uid, stopped at its exec
// until its limits are set. The function is PID 1 of its namespace: when
// it exits, the kernel kills whatever it left; the thread then exits and
// the run's mounts go with its namespace, so nothing a run mounts is ever
// seen by the worker or the next run. Re-executing the worker binary as a
// helper would cost a Go start-up per call (about 90 ms under TCG).

// RunDir is where each run's root is mounted, in the run's own mount
// namespace (the directory itself is only a mount point).
var RunDir = "/run/mf-sandbox"

var (
	prepareOnce sync.Once
	prepareErr  error
)

// Prepare does the one-time set-up of the direct path (the run directory,
// the mount_setattr probe) now rather than in the first job: the worker
// calls it while it connects, off a cold start's critical path. Calling
// it is optional and harmless off a worker.
func Prepare() error {
	if Available() != Full {
		return nil
	}
	prepareOnce.Do(func() {
		haveMountSetattr()
		DefaultLimits()
		if err := os.MkdirAll(RunDir, 0o700); err != nil {
			prepareErr = fmt.Errorf("sandbox run directory: %w", err)
		}
	})
	return prepareErr
}

// runDirect runs spec as described above and returns cmd.Wait's error.
func runDirect(ctx context.Context, spec Spec, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := Prepare(); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, spec.Path)
	cmd.Args, cmd.Env, cmd.Dir = spec.Args, spec.Env, spec.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     RunDir,
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS,
		Credential: &syscall.Credential{Uid: spec.UID, Gid: spec.GID, Groups: []uint32{}},
		Setpgid:    true,
		// Sent when the starting thread exits: it waits for the function.
		Pdeathsig: syscall.SIGKILL,
		// Stopped at its exec, for limitStarted.
		Ptrace: true,
	}
	// The function is its namespace's init: killing it kills the rest.
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	// exec resolved the path against our root: use it as given, inside.
	cmd.Path, cmd.Err = spec.Path, nil
	done := make(chan error, 1)
	onOwnThread(func() { done <- runOnThread(cmd, spec) })
	return <-done
}

// onOwnThread runs fn in a new goroutine locked to a thread that ends
// with it, taking fn's mount namespace and dropped privileges along. The
// main thread cannot end (Go would keep it, in the run's namespace, for
// good): a goroutine that lands there hands fn to another thread, holding
// the main thread until fn's goroutine has locked its own.
func onOwnThread(fn func()) {
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread ends with fn
		if unix.Gettid() != unix.Getpid() {
			fn()
			return
		}
		locked := make(chan struct{})
		go func() {
			goruntime.LockOSThread()
			close(locked)
			fn()
		}()
		<-locked
		goruntime.UnlockOSThread()
	}()
}

// runOnThread is the run on its locked thread.
func runOnThread(cmd *exec.Cmd, spec Spec) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("sandbox: a mount namespace for the run: %w (does the kernel have CONFIG_NAMESPACES?)", err)
	}
	// Nothing mounted from here on propagates to the worker's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("sandbox: make the run's mounts private: %w", err)
	}
	if err := buildRoot(RunDir, spec, procHidePID); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	if err := dropPrivileges(); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("sandbox: start %s: %w (does the kernel have CONFIG_PID_NS and CONFIG_UTS_NS, and allow ptrace?)", spec.Path, err)
		}
		return fmt.Errorf("sandbox: start %s: %w", spec.Path, err)
	}
	// From here the thread only watches the function: it becomes the
	// function's user, so it may set its limits without CAP_SYS_RESOURCE
	// (which a container running the tests may lack). It counts as one of
	// the uid's processes while the run lasts, hence Procs+1.
	lim := spec.Limits.withDefaults()
	if spec.UID != 0 {
		if err := becomeUser(spec.UID, spec.GID); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return fmt.Errorf("sandbox: %w", err)
		}
		lim.Procs++
	}
	if err := limitStarted(cmd.Process.Pid, lim); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return err
	}
	return cmd.Wait()
}

// becomeUser gives this thread alone (raw system calls: Go's Setuid would
// change every thread) the uid, gid and no groups, and so no capabilities.
func becomeUser(uid, gid uint32) error {
	if _, _, e := unix.RawSyscall(sysSetgroups, 0, 0, 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	if _, _, e := unix.RawSyscall(sysSetresgid, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
		return fmt.Errorf("setresgid: %w", e)
	}
	if _, _, e := unix.RawSyscall(sysSetresuid, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
		return fmt.Errorf("setresuid: %w", e)
	}
	return nil
}
