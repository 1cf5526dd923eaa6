package sandbox

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	goruntime "runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxSpec bounds the spec the helper reads (secrets included).
const maxSpec = 64 << 20

// MaybeMain runs the sandbox helper and exits when this process is one;
// otherwise it returns at once. Call it first thing in main and TestMain.
func MaybeMain() {
	if len(os.Args) == 0 || os.Args[0] != helperArg0 {
		return
	}
	if len(os.Args) == 2 && os.Args[1] == "probe" {
		os.Exit(0) // reached: the namespaces could be created
	}
	os.Exit(helperMain())
}

func helperMain() int {
	// Privilege changes below (no_new_privs, the capability bounding set)
	// are per thread: keep to this one, which also forks the function.
	goruntime.LockOSThread()
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		return ExitSetup
	}
	spec, err := readSpec(os.Stdin)
	if err != nil {
		return fail(err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail(fmt.Errorf("make mounts private: %w", err))
	}
	// The new root is a tmpfs mounted over /sys of this namespace: the
	// function never sees /sys, and no function's files live there.
	const root = "/sys"
	if err := buildRoot(root, spec, procOwnNS); err != nil {
		return fail(err)
	}
	if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
		return fail(fmt.Errorf("hostname: %w", err))
	}
	if err := unix.Chdir(root); err != nil {
		return fail(err)
	}
	if err := unix.Chroot("."); err != nil {
		return fail(fmt.Errorf("chroot: %w", err))
	}
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	if err := unix.Chdir(dir); err != nil {
		return fail(fmt.Errorf("working directory %s: %w", dir, err))
	}
	if err := dropPrivileges(); err != nil {
		return fail(err)
	}
	if err := limitSelf(spec.Limits.withDefaults()); err != nil {
		return fail(err)
	}
	pid, err := syscall.ForkExec(spec.Path, spec.Args, &syscall.ProcAttr{
		Dir:   dir,
		Env:   spec.Env,
		Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: spec.UID, Gid: spec.GID, Groups: []uint32{}, NoSetGroups: spec.InUserNS},
		},
	})
	if err != nil {
		return fail(fmt.Errorf("start %s: %w", spec.Path, err))
	}
	return reap(pid)
}

// readSpec reads the length-prefixed spec without reading past it: what
// follows on stdin is the function's request, which the function inherits.
func readSpec(f *os.File) (Spec, error) {
	var spec Spec
	var hdr [8]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return spec, fmt.Errorf("read spec: %w", err)
	}
	n := binary.BigEndian.Uint64(hdr[:])
	if n > maxSpec {
		return spec, fmt.Errorf("spec of %d bytes is too large", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		return spec, fmt.Errorf("read spec: %w", err)
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return spec, fmt.Errorf("spec: %w", err)
	}
	return spec, nil
}

// reap waits for the function's main process as the namespace's init:
// it collects every orphan too. When it returns, the helper exits and the
// kernel kills whatever is left in the namespace.
func reap(main int) int {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "sandbox: wait: %v\n", err)
			return ExitSetup
		}
		if pid != main {
			continue
		}
		if ws.Signaled() {
			fmt.Fprintf(os.Stderr, "sandbox: function killed by signal %v\n", ws.Signal())
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

// dropPrivileges sets no_new_privs and empties the capability bounding set,
// so nothing the function runs (a setuid binary, file capabilities) can
// gain privileges. The uid change at exec clears the rest.
func dropPrivileges() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	for c := 0; c <= unix.CAP_LAST_CAP; c++ {
		err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: the kernel has fewer caps
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	return nil
}

// ValidSecretName reports whether name can be a secret's file name.
func ValidSecretName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}
