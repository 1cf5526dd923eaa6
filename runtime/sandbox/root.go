package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// A run's root is a tmpfs holding mount points: binds of the function's
// files (read-only, recursively), a tmpfs /tmp, a minimal /dev, a /proc
// and the secrets. A function's files are untrusted: an image may have
// `tmp -> /functions/other` or `var -> /`. So every path inside the new
// root is resolved from the root's descriptor without following any
// symlink (openat2 RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS), and every mount
// goes through an O_PATH descriptor (/proc/thread-self/fd/N), never
// through a path the kernel would resolve again.

// hidden are the top-level entries of the machine's own root a function
// never sees: pseudo filesystems (replaced by its own), the runtime's files
// and the worker binary.
var hidden = map[string]bool{"proc": true, "sys": true, "dev": true, "run": true, "tmp": true, "var": true, "init": true}

// replaced are the top-level entries of an image the sandbox provides
// itself, whatever the image has there (a symlink included): /proc, /dev
// and /tmp are always mounted over, /var is copied apart (below).
var replaced = map[string]bool{"proc": true, "dev": true, "tmp": true, "var": true}

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

// rootSize caps the root's own tmpfs: it holds only mount points and
// symlinks, and nobody but the sandbox writes there.
const rootSize = "4m"

// rootBuilder assembles a run's root.
type rootBuilder struct {
	fd   int    // O_PATH descriptor of the root's tmpfs
	path string // where that tmpfs is mounted, as /proc/thread-self/mountinfo shows it
	// ro are read-only binds whose submounts are still writable (kernels
	// without mount_setattr): finishReadOnly remounts those.
	ro []string
}

// buildRoot assembles the function's root on a tmpfs mounted at root, in
// the caller's own mount namespace (the run's, never the worker's).
func buildRoot(root string, spec Spec, pm procMode) error {
	src, skip := spec.Root, replaced
	if src == "" {
		src, skip = "/", hidden
	}
	srcFD, err := unix.Open(src, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("function root %s: %w", src, err)
	}
	defer unix.Close(srcFD)
	tmpfs := "mode=0755,size=" + rootSize
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, tmpfs); err != nil {
		return fmt.Errorf("mount the run's root on %s: %w", root, err)
	}
	b := &rootBuilder{fd: -1}
	defer func() {
		if b.fd >= 0 {
			unix.Close(b.fd)
		}
	}()
	if b.fd, err = unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("the run's root: %w", err)
	}
	if b.path, err = os.Readlink(fdPath(b.fd)); err != nil {
		return fmt.Errorf("the run's root: %w", err)
	}
	if err := b.replicate(srcFD, "", skip); err != nil {
		return err
	}
	for _, d := range []string{"proc", "dev", "tmp", "var"} {
		fd, err := b.mkdirAll(d)
		if err != nil {
			return err
		}
		unix.Close(fd)
	}
	if spec.Root != "" {
		if err := b.imageVar(srcFD); err != nil {
			return err
		}
	}
	lim := spec.Limits.withDefaults()
	if err := b.mountTmpfs("tmp", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,"+tmpfsSize(lim.Tmp)); err != nil {
		return err
	}
	if err := b.buildDev(); err != nil {
		return err
	}
	for _, p := range spec.Binds {
		if err := b.bindHost(p); err != nil {
			return err
		}
	}
	if err := b.buildProc(pm); err != nil {
		return err
	}
	if err := b.finishReadOnly(); err != nil {
		return err
	}
	return b.writeSecrets(spec)
}

// tmpfsSize is the size= and nr_inodes= of a tmpfs of n bytes: each
// inode costs the kernel memory too, about 1 KiB; allow one per 8 KiB.
func tmpfsSize(n uint64) string {
	return fmt.Sprintf("size=%d,nr_inodes=%d", n, max(1024, n/8192))
}

// fdPath names a descriptor for mount(2) and readlink.
func fdPath(fd int) string { return "/proc/thread-self/fd/" + strconv.Itoa(fd) }

// clean turns p (absolute or relative to the root) into a path relative
// to the root without . or .. ("" is the root itself).
func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// open resolves rel inside the root, following no symlink (a symlink
// anywhere on the way, the last component included, is refused).
func (b *rootBuilder) open(rel string, flags int) (int, error) {
	rel = clean(rel)
	if rel == "" {
		rel = "."
	}
	// Not O_NOFOLLOW: with O_PATH it would return a trailing symlink
	// itself; without, RESOLVE_NO_SYMLINKS refuses it (ELOOP).
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
	for tries := 0; ; tries++ {
		fd, err := unix.Openat2(b.fd, rel, &how)
		switch {
		case err == nil:
			return fd, nil
		case (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && tries < 10:
			continue // a rename or mount raced the lookup
		case errors.Is(err, unix.ELOOP):
			return -1, fmt.Errorf("%w: /%s is a symlink or lies below one, where the sandbox mounts: make it a directory in the image", ErrUnsafeRoot, rel)
		case errors.Is(err, unix.ENOSYS):
			return -1, fmt.Errorf("resolve /%s in the run's root: %w (openat2 needs Linux 5.6 or later)", rel, err)
		default:
			return -1, fmt.Errorf("/%s in the run's root: %w", rel, err)
		}
	}
}

// mkdirAll makes rel and its parents as directories inside the root and
// returns an O_PATH descriptor of it.
func (b *rootBuilder) mkdirAll(rel string) (int, error) {
	rel = clean(rel)
	fd, err := b.open(rel, unix.O_PATH|unix.O_DIRECTORY)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	parent, name := path.Split(rel)
	pfd, err := b.mkdirAll(parent)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	if err := unix.Mkdirat(pfd, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("make /%s in the run's root: %w", rel, err)
	}
	return b.open(rel, unix.O_PATH|unix.O_DIRECTORY)
}

// mkfile makes rel an empty file inside the root (a mount point for a
// file) and returns an O_PATH descriptor of it.
func (b *rootBuilder) mkfile(rel string) (int, error) {
	parent, name := path.Split(clean(rel))
	pfd, err := b.mkdirAll(parent)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	if err := unix.Mknodat(pfd, name, unix.S_IFREG|0o644, 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("make /%s in the run's root: %w", rel, err)
	}
	return b.open(rel, unix.O_PATH)
}

// mountTmpfs mounts a tmpfs on the directory rel.
func (b *rootBuilder) mountTmpfs(rel string, flags uintptr, data string) error {
	fd, err := b.mkdirAll(rel)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Mount("tmpfs", fdPath(fd), "tmpfs", flags, data); err != nil {
		return fmt.Errorf("mount a tmpfs on /%s of the run's root: %w", rel, err)
	}
	return nil
}

// bind shows src (a descriptor) at rel, read-only with everything below it.
func (b *rootBuilder) bind(src int, rel string) error {
	parent, name := path.Split(clean(rel))
	dir, err := b.open(parent, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	return b.bindAt(src, dir, name, rel)
}

// bindAt binds src onto name in dir, a directory of the root: name is one
// component the sandbox made itself, so looking it up follows nothing.
func (b *rootBuilder) bindAt(src, dir int, name, rel string) error {
	dst, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("/%s in the run's root: %w", rel, err)
	}
	err = unix.Mount(fdPath(src), fdPath(dst), "", unix.MS_BIND|unix.MS_REC, "")
	unix.Close(dst)
	if err != nil {
		return fmt.Errorf("bind onto /%s of the run's root: %w", rel, err)
	}
	if haveMountSetattr() {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
		if err := unix.MountSetattr(dir, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_RECURSIVE, &attr); err != nil {
			return fmt.Errorf("read-only /%s: %w", rel, err)
		}
		return nil
	}
	// The bind's root now, not the directory below it.
	top, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("/%s in the run's root: %w", rel, err)
	}
	err = remountRO(top)
	unix.Close(top)
	if err != nil {
		return fmt.Errorf("read-only /%s: %w", rel, err)
	}
	b.ro = append(b.ro, clean(rel))
	return nil
}

// bindHost shows the machine's path p (absolute, the worker's choice) at
// the same place in the root.
func (b *rootBuilder) bindHost(p string) error {
	src, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bind %s: %w", p, err)
	}
	defer unix.Close(src)
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return fmt.Errorf("bind %s: %w", p, err)
	}
	var dst int
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		dst, err = b.mkdirAll(p)
	} else {
		dst, err = b.mkfile(p)
	}
	if err != nil {
		return err
	}
	unix.Close(dst)
	return b.bind(src, p)
}

// replicate shows every entry of the directory src in rel, read-only,
// except skip: directories and files are bound, symlinks copied (they
// resolve inside the function's root, as they would in a container).
func (b *rootBuilder) replicate(src int, rel string, skip map[string]bool) error {
	dfd, err := unix.Openat(src, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("function root: %w", err)
	}
	dir := os.NewFile(uintptr(dfd), "function root")
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return fmt.Errorf("function root: %w", err)
	}
	sort.Strings(names)
	dst, err := b.mkdirAll(rel)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	for _, name := range names {
		if skip[name] {
			continue
		}
		if err := b.replicateEntry(src, dst, name, path.Join(rel, name)); err != nil {
			return err
		}
	}
	return nil
}

func (b *rootBuilder) replicateEntry(src, dst int, name, rel string) error {
	sfd, err := unix.Openat(src, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil // gone meanwhile: left out, the safe direction
	}
	defer unix.Close(sfd)
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		return fmt.Errorf("function root: %s: %w", name, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(src, name, buf)
		if err != nil {
			return fmt.Errorf("function root: %s: %w", name, err)
		}
		if err := unix.Symlinkat(string(buf[:n]), dst, name); err != nil {
			return fmt.Errorf("function root: %s: %w", name, err)
		}
		return nil
	case unix.S_IFDIR:
		err = unix.Mkdirat(dst, name, 0o755)
	case unix.S_IFREG:
		err = unix.Mknodat(dst, name, unix.S_IFREG|0o644, 0)
	default:
		return nil // sockets, devices, fifos: not shown
	}
	if err != nil {
		return fmt.Errorf("make /%s in the run's root: %w", rel, err)
	}
	// An entry that cannot be shown (an automount, say) is left out: the
	// safe direction.
	if b.bindAt(sfd, dst, name, rel) != nil {
		unix.Unlinkat(dst, name, 0)
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			unix.Unlinkat(dst, name, unix.AT_REMOVEDIR)
		}
	}
	return nil
}

// imageVar copies an image's /var, all but openfaas (the secrets go
// there). A symlinked /var is refused: the secrets are mounted below it.
func (b *rootBuilder) imageVar(src int) error {
	fd, err := unix.Openat(src, "var", unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("the image's /var: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("the image's /var: %w", err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax)
		n, _ := unix.Readlinkat(src, "var", buf)
		return fmt.Errorf("%w: the image's /var is a symlink (to %q); the sandbox puts the secrets below /var: make /var a directory in the image",
			ErrUnsafeRoot, buf[:n])
	case unix.S_IFDIR:
		return b.replicate(fd, "var", map[string]bool{"openfaas": true})
	}
	return nil // a file: the run gets an empty /var
}

// remountFallback forces the remount path of kernels without
// mount_setattr (tests).
var remountFallback bool

var (
	setattrOnce sync.Once
	setattrOK   bool
)

// haveMountSetattr probes once for mount_setattr (Linux 5.12+): an
// invalid descriptor gets EBADF from a kernel that has it.
func haveMountSetattr() bool {
	setattrOnce.Do(func() {
		err := unix.MountSetattr(-1, "", unix.AT_EMPTY_PATH, &unix.MountAttr{})
		setattrOK = errors.Is(err, unix.EBADF) || errors.Is(err, unix.EINVAL)
	})
	return setattrOK && !remountFallback
}

// remountRO makes the one mount whose root fd is read-only.
func remountRO(fd int) error {
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV)
	if err := unix.Mount("", fdPath(fd), "", flags, ""); err != nil {
		// A user namespace cannot clear flags a locked mount has (e.g.
		// noexec); keep the ones it has and add read-only.
		var st unix.Statfs_t
		if unix.Fstatfs(fd, &st) == nil {
			flags |= uintptr(st.Flags) & (unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_RELATIME | unix.MS_NODIRATIME)
		}
		return unix.Mount("", fdPath(fd), "", flags, "")
	}
	return nil
}

// finishReadOnly remounts read-only every mount below the read-only
// binds (kernels without mount_setattr), in one pass over mountinfo.
func (b *rootBuilder) finishReadOnly() error {
	if len(b.ro) == 0 {
		return nil
	}
	data, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return fmt.Errorf("read-only binds: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		for _, rel := range b.ro {
			if !strings.HasPrefix(mp, path.Join(b.path, rel)+"/") {
				continue
			}
			sub := strings.TrimPrefix(mp, b.path+"/")
			fd, err := b.open(sub, unix.O_PATH)
			if err != nil {
				return err
			}
			err = remountRO(fd)
			unix.Close(fd)
			if err != nil {
				return fmt.Errorf("read-only /%s: %w", sub, err)
			}
			break
		}
	}
	b.ro = nil
	return nil
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				out.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		out.WriteByte(s[i])
	}
	return out.String()
}

// buildDev makes a minimal /dev: a few character devices bound from the
// machine's, and the usual links.
func (b *rootBuilder) buildDev() error {
	if err := b.mountTmpfs("dev", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		return err
	}
	dev, err := b.open("dev", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(dev)
	for _, d := range devices {
		src, err := unix.Open("/dev/"+d, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // this machine lacks it
		}
		err = unix.Mknodat(dev, d, unix.S_IFREG|0o644, 0)
		if err == nil {
			var dst int
			if dst, err = b.open("dev/"+d, unix.O_PATH); err == nil {
				err = unix.Mount(fdPath(src), fdPath(dst), "", unix.MS_BIND, "")
				unix.Close(dst)
			}
		}
		unix.Close(src)
		if err != nil {
			return fmt.Errorf("bind /dev/%s: %w", d, err)
		}
	}
	for _, l := range [][2]string{{"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"},
		{"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"}} {
		if err := unix.Symlinkat(l[1], dev, l[0]); err != nil {
			return fmt.Errorf("/dev/%s: %w", l[0], err)
		}
	}
	return nil
}

// buildProc mounts the run's /proc and hides what would tell a function
// about the machine.
func (b *rootBuilder) buildProc(pm procMode) error {
	fd, err := b.mkdirAll("proc")
	if err != nil {
		return err
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	data := ""
	if pm == procHidePID {
		// Only processes (no /proc/cmdline, /proc/sys, ...), and of those
		// only the function's own uid's: never PID 1.
		data = "hidepid=invisible,subset=pid"
	}
	err = unix.Mount("proc", fdPath(fd), "proc", flags, data)
	unix.Close(fd)
	if err != nil || pm == procHidePID {
		if err != nil {
			return fmt.Errorf("mount /proc of the run's root: %w", err)
		}
		return nil
	}
	null, err := b.open("dev/null", unix.O_PATH)
	if err != nil {
		return err
	}
	defer unix.Close(null)
	for _, name := range maskedProc {
		p, err := b.open("proc/"+name, unix.O_PATH)
		if err != nil {
			continue // this kernel lacks it
		}
		err = unix.Mount(fdPath(null), fdPath(p), "", unix.MS_BIND, "")
		unix.Close(p)
		if err != nil {
			return fmt.Errorf("mask /proc/%s: %w", name, err)
		}
	}
	for _, name := range []string{"sys", "bus", "fs", "irq"} {
		p, err := b.open("proc/"+name, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			continue
		}
		err = b.bind(p, "proc/"+name)
		unix.Close(p)
		if err != nil {
			return err
		}
	}
	return nil
}

// writeSecrets puts the job's secrets on a tmpfs at the secrets
// directory, owned by the function, then makes it read-only.
func (b *rootBuilder) writeSecrets(spec Spec) error {
	if len(spec.Secrets) == 0 {
		return nil
	}
	names := make([]string, 0, len(spec.Secrets))
	for n := range spec.Secrets {
		if !ValidSecretName(n) {
			return fmt.Errorf("bad secret name %q", n)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := b.mountTmpfs(spec.SecretsDir, flags, "mode=0500"); err != nil {
		return err
	}
	dir, err := b.open(spec.SecretsDir, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	for _, n := range names {
		fd, err := unix.Openat(dir, n, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o400)
		if err != nil {
			return fmt.Errorf("secret %s: %w", n, err)
		}
		f := os.NewFile(uintptr(fd), n)
		_, err = f.Write(spec.Secrets[n])
		if err == nil {
			err = f.Chown(int(spec.UID), int(spec.GID))
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("secret %s: %w", n, err)
		}
	}
	if err := unix.Fchownat(dir, "", int(spec.UID), int(spec.GID), unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("secrets directory: %w", err)
	}
	if err := unix.Mount("", fdPath(dir), "", unix.MS_REMOUNT|unix.MS_RDONLY|flags, "mode=0500"); err != nil {
		return fmt.Errorf("read-only secrets: %w", err)
	}
	return nil
}
