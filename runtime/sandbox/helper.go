package sandbox

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
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

// hidden are the top-level entries of the machine's own root a function
// never sees: pseudo filesystems (replaced by its own), the runtime's files
// and the worker binary.
var hidden = map[string]bool{"proc": true, "sys": true, "dev": true, "run": true, "tmp": true, "var": true, "init": true}

// maskedProc are /proc files hidden behind /dev/null: the kernel command
// line (the worker's parameters) and kernel internals.
var maskedProc = []string{"cmdline", "bootconfig", "kcore", "keys", "kallsyms", "sysrq-trigger",
	"timer_list", "sched_debug", "partitions", "diskstats", "config.gz", "kmsg"}

// devices are the character devices a function gets; no block device, no tty.
var devices = []string{"null", "zero", "full", "random", "urandom"}

// procMode says how a run gets its /proc.
type procMode int

const (
	// procOwnNS: a proc mounted from inside the run's PID namespace (the
	// helper), masked like a container's.
	procOwnNS procMode = iota
	// procHidePID: a proc mounted by the worker, showing only the
	// processes of the function's uid and no kernel files
	// (hidepid=invisible, subset=pid).
	procHidePID
)

// buildRoot assembles the function's root on a tmpfs mounted at root.
// Nothing here is seen outside (a private mount, or the helper's own
// mount namespace).
func buildRoot(root string, spec Spec, pm procMode) error {
	src := spec.Root
	skip := map[string]bool{}
	if src == "" {
		src, skip = "/", hidden
	}
	srcDir, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("function root: %w", err)
	}
	defer srcDir.Close()
	srcFD := fmt.Sprintf("/proc/self/fd/%d", srcDir.Fd())
	if err := mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return err
	}
	if err := unix.Mount("", root, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s private: %w", root, err)
	}
	if err := replicate(srcFD, root, skip); err != nil {
		return err
	}
	for _, d := range []string{"proc", "dev", "tmp", "var"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	if spec.Root != "" {
		if fi, err := os.Stat(filepath.Join(srcFD, "var")); err == nil && fi.IsDir() {
			// An image's /var, all but openfaas (the secrets go there).
			os.Remove(filepath.Join(root, "var"))
			os.Mkdir(filepath.Join(root, "var"), 0o755)
			if err := replicate(filepath.Join(srcFD, "var"), filepath.Join(root, "var"), map[string]bool{"openfaas": true}); err != nil {
				return err
			}
		}
	}
	if err := mount("tmpfs", filepath.Join(root, "tmp"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return err
	}
	if err := buildDev(filepath.Join(root, "dev")); err != nil {
		return err
	}
	for _, b := range spec.Binds {
		dst := filepath.Join(root, b)
		if err := bindPoint(b, dst); err != nil {
			return err
		}
		if err := bindRO(b, dst); err != nil {
			return err
		}
	}
	if err := buildProc(filepath.Join(root, "proc"), filepath.Join(root, "dev", "null"), pm); err != nil {
		return err
	}
	return writeSecrets(filepath.Join(root, spec.SecretsDir), spec)
}

func mount(src, dst, typ string, flags uintptr, data string) error {
	if err := unix.Mount(src, dst, typ, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", typ, dst, err)
	}
	return nil
}

// bindPoint creates dst as a mount point of src's kind (directory or file).
func bindPoint(src, dst string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	if fi.IsDir() {
		return os.MkdirAll(dst, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// bindRO shows src at dst, read-only, without setuid or devices.
func bindRO(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV)
	if err := unix.Mount("", dst, "", flags, ""); err != nil {
		// A user namespace cannot clear flags a locked mount has (e.g.
		// noexec); keep the ones it has and add read-only.
		var st unix.Statfs_t
		if unix.Statfs(dst, &st) == nil {
			flags |= uintptr(st.Flags) & (unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_RELATIME | unix.MS_NODIRATIME)
		}
		if err := unix.Mount("", dst, "", flags, ""); err != nil {
			return fmt.Errorf("read-only %s: %w", dst, err)
		}
	}
	return nil
}

// replicate shows every entry of src in dst, read-only, except skip:
// directories and files are bind-mounted, symlinks copied.
func replicate(src, dst string, skip map[string]bool) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("function root: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if skip[name] {
			continue
		}
		s, d := filepath.Join(src, name), filepath.Join(dst, name)
		switch {
		case e.Type()&os.ModeSymlink != 0:
			target, err := os.Readlink(s)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, d); err != nil {
				return err
			}
		case e.IsDir() || e.Type().IsRegular():
			// An entry that cannot be shown (an automount, a socket's
			// directory gone meanwhile) is left out: the safe direction.
			if bindPoint(s, d) != nil {
				continue
			}
			if bindRO(s, d) != nil {
				os.Remove(d)
			}
		}
	}
	return nil
}

// buildDev makes a minimal /dev: a few character devices bound from the
// machine's, and the usual links.
func buildDev(dev string) error {
	if err := mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755"); err != nil {
		return err
	}
	for _, d := range devices {
		p := filepath.Join(dev, d)
		if err := bindPoint("/dev/"+d, p); err != nil {
			continue // this machine lacks it
		}
		if err := unix.Mount("/dev/"+d, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", d, err)
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	return nil
}

// buildProc mounts the run's /proc and hides what would tell a function
// about the machine.
func buildProc(proc, null string, pm procMode) error {
	if pm == procHidePID {
		// Only processes (no /proc/cmdline, /proc/sys, ...), and of those
		// only the function's own uid's: never PID 1.
		return mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "hidepid=invisible,subset=pid")
	}
	if err := mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	for _, name := range maskedProc {
		p := filepath.Join(proc, name)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := unix.Mount(null, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mask /proc/%s: %w", name, err)
		}
	}
	for _, name := range []string{"sys", "bus", "fs", "irq"} {
		p := filepath.Join(proc, name)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := bindRO(p, p); err != nil {
			return err
		}
	}
	return nil
}

// writeSecrets puts the job's secrets on a tmpfs at dir, owned by the
// function, then makes it read-only.
func writeSecrets(dir string, spec Spec) error {
	if len(spec.Secrets) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0500"); err != nil {
		return err
	}
	names := make([]string, 0, len(spec.Secrets))
	for n := range spec.Secrets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !ValidSecretName(n) {
			return fmt.Errorf("bad secret name %q", n)
		}
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, spec.Secrets[n], 0o400); err != nil {
			return err
		}
		if err := os.Chown(p, int(spec.UID), int(spec.GID)); err != nil {
			return err
		}
	}
	if err := os.Chown(dir, int(spec.UID), int(spec.GID)); err != nil {
		return err
	}
	return mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0500")
}

// ValidSecretName reports whether name can be a secret's file name.
func ValidSecretName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}
