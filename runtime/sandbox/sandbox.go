// Package sandbox runs one user function contained: its own uid and gid, no
// capabilities, no_new_privs, and its own mount, PID and UTS namespaces with
// a fresh /proc, a minimal /dev, a private /tmp and the job's secrets, and a
// read-only view of the function's files. The worker runtime, the key and
// the block devices are out of sight.
//
// How: as root (a worker's PID 1), each run gets a thread of its own that
// leaves the worker's mount namespace, builds the run's root on a tmpfs
// there and starts the function chrooted into it in new PID and UTS
// namespaces, without capabilities (direct.go); the function is PID 1 of
// its PID namespace. As an ordinary user (mfinit invoke on a developer's
// machine), Run re-executes the current binary as a helper in a user
// namespace (helper.go), which builds the root and starts the function,
// as the new PID namespace's init. Either way the kernel kills every
// process left in a PID namespace when its init exits, and the run's
// mounts die with its mount namespace, so a function never leaves
// anything behind for the next job, warm worker or not.
//
// A function's files are untrusted: the root is built without following
// any symlink in them (root.go), and a run is bounded by Limits
// (limits.go) so a fork or memory bomb cannot starve the worker.
//
// Every program that runs functions must call MaybeMain first thing in main
// (and in TestMain for tests), for the helper.
package sandbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
)

// helperArg0 is argv[0] of the helper process: MaybeMain recognises it.
const helperArg0 = "mf-sandbox"

// Nobody is the uid and gid functions run as when their image names no user.
const Nobody = 65534

// DefaultSecretsDir is where functions find their secrets, as on OpenFaaS.
const DefaultSecretsDir = "/var/openfaas/secrets"

// ExitSetup is the helper's exit status when it could not build the sandbox;
// its reason is on stderr.
const ExitSetup = 125

// Spec is one contained run.
type Spec struct {
	Path string   // executable, as seen inside the sandbox
	Args []string // argv, Args[0] included
	Env  []string
	Dir  string // working directory inside; "" is /
	// Root is the filesystem the function sees, read-only: an image's
	// rootfs, or "" for this machine's own root (minus /proc, /sys, /dev,
	// /run, /tmp, /var and /init, which the function never sees).
	Root string
	// Binds are host paths shown read-only at the same place (a function's
	// executable that lives outside Root's visible part, e.g. under /tmp).
	Binds []string
	UID   uint32
	GID   uint32
	// Hostname is the UTS name inside (default "function").
	Hostname string
	// Secrets are files in SecretsDir (default DefaultSecretsDir), owned by
	// the function's uid, mode 0400, on a tmpfs that dies with the run.
	Secrets    map[string][]byte
	SecretsDir string

	// Limits bound what the run may take of the machine; zero fields take
	// DefaultLimits'.
	Limits Limits

	// InUserNS is set by Command: a user namespace maps only the caller, so
	// the function keeps its groups (setgroups is denied there).
	InUserNS bool
}

// ErrUnsafeRoot means a function's root has a symlink where the sandbox
// mounts something (its /var, or a parent of the secrets directory).
var ErrUnsafeRoot = errors.New("unsafe function root")

// Limits bound one run, so that a fork or memory bomb cannot starve the
// worker. Without cgroups they are per process (Memory, Files, FileSize)
// or per uid (Procs).
type Limits struct {
	Procs    uint64 // processes and threads of the function's uid (RLIMIT_NPROC)
	Memory   uint64 // bytes of data per process: heap, stacks, writable maps (RLIMIT_DATA)
	FileSize uint64 // bytes of the largest file it may write (RLIMIT_FSIZE)
	Files    uint64 // open files per process (RLIMIT_NOFILE)
	Tmp      uint64 // bytes its /tmp (memory) may hold
	Nice     int    // CPU priority, 1 to 19 (so PID 1 still gets the CPU); 0 takes the default (19 on a worker, else unchanged)
}

// Mode says how contained a run is on this machine.
type Mode int

const (
	// Full: root on this machine; the function gets its own uid and gid
	// (no helper process).
	Full Mode = iota
	// UserNS: not root; a user namespace gives the namespaces, and the
	// function runs as the caller's own uid (root inside the namespace,
	// the only uid mapped) without capabilities.
	UserNS
	// None: not root and user namespaces are unavailable; the function runs
	// as an ordinary child process, uncontained.
	None
)

func (m Mode) String() string {
	return [...]string{"full", "user namespace", "none"}[m]
}

var (
	modeOnce sync.Once
	mode     Mode
)

// Available reports how contained functions run on this machine. It probes
// once (a short helper run) and logs a line when containment is degraded.
func Available() Mode {
	modeOnce.Do(func() {
		if os.Geteuid() == 0 {
			mode = Full
			return
		}
		cmd := exec.Command("/proc/self/exe")
		cmd.Args = []string{helperArg0, "probe"}
		cmd.SysProcAttr = userNSAttr()
		if out, err := cmd.CombinedOutput(); err != nil {
			mode = None
			slog.Warn("functions run UNCONTAINED: not root, and user namespaces are unavailable here; run as root (as on a worker) or enable unprivileged user namespaces",
				"err", err, "output", string(out))
			return
		}
		mode = UserNS
		slog.Info("not root: functions run in a user namespace as this user, without capabilities (on a worker they run as their own uid)",
			"uid", os.Geteuid())
	})
	return mode
}

func userNSAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS,
		// Root inside, so the helper keeps its capabilities (in the
		// namespace only) across its exec; the function gets none, since
		// the helper empties the bounding set first.
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}},
	}
}

// ErrUncontained means Command cannot contain a function here (see Mode None).
var ErrUncontained = errors.New("functions cannot be contained on this machine")

// Run runs spec contained, with stdin, stdout and stderr as the function's
// standard streams, and returns when it has ended (the exec.ExitError of a
// non-zero exit). Cancelling ctx kills the function and every process it
// started. It returns ErrUncontained when this machine allows no
// containment; the caller then decides whether to run uncontained.
func Run(ctx context.Context, spec Spec, stdin io.Reader, stdout, stderr io.Writer) error {
	if spec.Path == "" {
		return errors.New("sandbox: no executable")
	}
	if len(spec.Args) == 0 {
		spec.Args = []string{spec.Path}
	}
	if spec.Hostname == "" {
		spec.Hostname = "function"
	}
	if spec.SecretsDir == "" {
		spec.SecretsDir = DefaultSecretsDir
	}
	switch Available() {
	case Full:
		return runDirect(ctx, spec, stdin, stdout, stderr)
	case UserNS:
		spec.UID, spec.GID = 0, 0 // the caller's uid outside, the only one mapped
		spec.InUserNS = true
		cmd, err := helperCommand(ctx, spec, stdin)
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		return cmd.Run()
	default:
		return ErrUncontained
	}
}

// helperCommand is the helper process (the user-namespace path): this
// binary re-executed in new namespaces, reading spec ahead of stdin.
func helperCommand(ctx context.Context, spec Spec, stdin io.Reader) (*exec.Cmd, error) {
	attr := userNSAttr()
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("sandbox spec: %w", err)
	}
	// The spec goes ahead of the request on stdin, not in argv or the
	// environment: the helper is PID 1 inside, and /proc/1/cmdline is
	// readable by every process there.
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(len(b)))
	if stdin == nil {
		stdin = bytes.NewReader(nil)
	}
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{helperArg0}
	cmd.Env = []string{}
	cmd.Stdin = io.MultiReader(bytes.NewReader(hdr[:]), bytes.NewReader(b), stdin)
	attr.Setpgid = true
	attr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr = attr
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd, nil
}
