package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// A QEMU worker gets the bundle of the function it is powered on for
// unpacked by its kernel, which unpacks the initramfs in C: the host
// appends the bundle's own records renamed under a directory
// (WritePrefixed), and the worker checks the tree it finds there with
// DigestTree instead of hashing and unpacking a file in Go.

// WritePrefixed copies the bundle archive read from r to w with every
// entry's name under prefix (prefix/config.json, prefix/rootfs/…), a
// newc archive ending with its trailer, for the kernel to unpack into a
// worker's root filesystem. It writes no record for prefix itself or the
// directories above it: the caller writes those first, with the modes it
// wants. Every record is checked as Unpack checks it (within lim; a name
// outside the bundle's, an entry below a symlink or file, a device node,
// a symlink that could leave rootfs/ are refused with ErrUnsafeImage) and
// written again as Encode writes it (owner 0, setuid and setgid cleared,
// no hard links), so the kernel makes exactly the tree DigestTree accepts.
// r must hold the archive and nothing after it.
func WritePrefixed(w io.Writer, r io.Reader, prefix string, lim Limits) error {
	if !validName(prefix) {
		return fmt.Errorf("bundle: prefix %q is not a clean relative path", prefix)
	}
	u := &unpacker{
		r:      &countReader{r: r, left: lim.Stream, limit: lim.Stream},
		root:   -1,
		lim:    lim,
		kinds:  map[string]uint32{},
		cache:  -1,
		out:    &newcWriter{w: w},
		prefix: prefix + "/",
	}
	if _, err := u.run(); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	u.out.header("TRAILER!!!", 0, 0, 1)
	return u.out.err
}

// copyRecord writes the record h, whose data comes from data, under the
// prefix (WritePrefixed).
func (u *unpacker) copyRecord(h header, data io.Reader) error {
	name := u.prefix + h.name
	typ := h.mode & modeType
	switch typ {
	case modeDir:
		u.out.header(name, modeDir|h.mode&0o1777, 0, 2)
	case modeSymlink:
		b, err := u.data(h.fileSize)
		if err != nil {
			return err
		}
		if err := checkTarget(strings.TrimPrefix(h.name, RootName+"/"), string(b)); err != nil {
			return err
		}
		u.out.header(name, modeSymlink|0o777, int64(len(b)), 1)
		u.out.write(b)
		u.out.pad()
	case modeReg:
		u.out.header(name, modeReg|h.mode&0o1777, h.fileSize, 1)
		if u.out.err == nil {
			n, err := io.CopyN(u.out.w, data, h.fileSize)
			u.out.n += n
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: truncated archive in %s", ErrUnsafeImage, h.name)
			}
			if err != nil {
				return err
			}
		}
		u.out.pad()
		if data == io.Reader(u.r) {
			if err := u.skipPad(); err != nil {
				return err
			}
		}
	}
	u.kinds[h.name] = typ
	return u.out.err
}

// DigestTree is the digest of the bundle Encode would write for the tree
// at dir, laid out as the kernel unpacks a WritePrefixed archive (or as
// Unpack does): dir/config.json and dir/rootfs/. It reads every file once
// and copies nothing. The digest is the bundle's if and only if the tree
// holds exactly the bundle's entries: the same names, types, permission
// bits, symlink targets and bytes, and nothing else. An entry not owned by
// the caller (the kernel makes the tree owned by root, a worker's PID 1),
// a file with a second hard link, or an entry that is not a directory,
// file or symlink is refused with ErrDigestMismatch; more than lim allows
// with ErrImageTooLarge. The config is the one read from config.json, the
// bytes hashed.
func DigestTree(dir string, lim Limits) (string, Config, error) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", Config{}, fmt.Errorf("bundle tree: %w", err)
	}
	if !fi.IsDir() {
		return "", Config{}, fmt.Errorf("%w: %s is not a directory", ErrDigestMismatch, dir)
	}
	names, err := treeNames(dir, lim)
	if err != nil {
		return "", Config{}, err
	}
	h := sha256.New()
	d := &treeDigest{
		a:   &newcWriter{w: h},
		dir: dir, lim: lim,
		uid: os.Geteuid(), gid: os.Getegid(),
		buf: make([]byte, 256<<10),
	}
	for _, name := range names {
		if err := d.entry(name); err != nil {
			return "", Config{}, err
		}
	}
	d.a.header("TRAILER!!!", 0, 0, 1)
	if d.a.err != nil {
		return "", Config{}, d.a.err
	}
	if d.cfg == nil {
		return "", Config{}, fmt.Errorf("%w: %s has no %s", ErrDigestMismatch, dir, ConfigName)
	}
	var cfg Config
	if err := json.Unmarshal(d.cfg, &cfg); err != nil {
		return "", Config{}, fmt.Errorf("%w: %s: %v", ErrDigestMismatch, ConfigName, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), cfg, nil
}

// treeNames lists the entries below dir, relative, in byte order: the
// order Encode writes them in.
func treeNames(dir string, lim Limits) ([]string, error) {
	var names []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		if len(names) >= lim.Files+2 { // config.json and rootfs, then the tree
			return fmt.Errorf("%w: more than %d entries", ErrImageTooLarge, lim.Files)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		names = append(names, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bundle tree: %w", err)
	}
	sort.Strings(names)
	return names, nil
}

// treeDigest hashes a tree's entries as Encode's records.
type treeDigest struct {
	a        *newcWriter
	dir      string
	lim      Limits
	uid, gid int
	total    int64
	cfg      []byte // config.json's bytes
	buf      []byte
}

// entry hashes the record of name (relative to dir).
func (d *treeDigest) entry(name string) error {
	p := filepath.Join(d.dir, name)
	differs := func(why string, args ...any) error {
		return fmt.Errorf("%w: %s %s: the tree is not the bundle's", ErrDigestMismatch, name, fmt.Sprintf(why, args...))
	}
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fmt.Errorf("bundle tree: %s: %w", name, err)
	}
	if int(st.Uid) != d.uid || int(st.Gid) != d.gid {
		return differs("is owned by %d:%d, not %d:%d", st.Uid, st.Gid, d.uid, d.gid)
	}
	mode := st.Mode & (modeType | 0o7777) // setuid or setgid: Encode never writes them, so the digest differs
	switch st.Mode & modeType {
	case modeDir:
		d.a.header(name, mode, 0, 2)
	case modeSymlink:
		target := make([]byte, maxName+1)
		n, err := unix.Readlink(p, target)
		if err != nil {
			return fmt.Errorf("bundle tree: %s: %w", name, err)
		}
		if n > maxName {
			return differs("links to a target longer than %d bytes", maxName)
		}
		d.a.header(name, mode, int64(n), 1)
		d.a.write(target[:n])
		d.a.pad()
	case modeReg:
		return d.file(name, p, differs)
	default:
		return differs("has file type %#o", st.Mode&modeType)
	}
	return d.a.err
}

// file hashes a regular file's record: its header from the open file's
// own status, then its bytes.
func (d *treeDigest) file(name, p string, differs func(string, ...any) error) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bundle tree: %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("bundle tree: %s: %w", name, err)
	}
	switch {
	case st.Mode&modeType != modeReg:
		return differs("changed type while it was read")
	case int(st.Uid) != d.uid || int(st.Gid) != d.gid:
		return differs("is owned by %d:%d, not %d:%d", st.Uid, st.Gid, d.uid, d.gid)
	case st.Nlink != 1:
		return differs("has %d hard links", st.Nlink)
	case st.Size > d.lim.FileBytes:
		return fmt.Errorf("%w: %s is %d bytes, the limit for one file is %d", ErrImageTooLarge, name, st.Size, d.lim.FileBytes)
	}
	if d.total += st.Size; d.total > d.lim.Bytes {
		return fmt.Errorf("%w: more than %d bytes of files (at %s)", ErrImageTooLarge, d.lim.Bytes, name)
	}
	d.a.header(name, st.Mode&(modeType|0o7777), st.Size, 1)
	if d.a.err != nil {
		return d.a.err
	}
	if name == ConfigName {
		if st.Size > maxConfig {
			return differs("is larger than %d bytes", maxConfig)
		}
		d.cfg = make([]byte, st.Size)
		if _, err := io.ReadFull(f, d.cfg); err != nil {
			return differs("could not be read whole: %v", err)
		}
		d.a.write(d.cfg)
	} else {
		n, err := io.CopyBuffer(d.a.w, io.LimitReader(f, st.Size), d.buf)
		d.a.n += n
		if err != nil {
			return fmt.Errorf("bundle tree: %s: %w", name, err)
		}
		if n != st.Size {
			return differs("changed size while it was read")
		}
	}
	d.a.pad()
	return d.a.err
}
