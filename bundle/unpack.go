package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Unpack writes the bundle read from r into dir, an existing directory
// (normally empty and private to the caller): dir/config.json and
// dir/rootfs/. It returns the config.
//
// It is the worker's defence in depth, after the digest check: it trusts
// nothing in the archive. A name that is absolute, unclean or holds "..",
// an entry whose parent is not a directory this archive made (below a
// symlink or a file), a second entry of one name, a device node, FIFO or
// socket, or a symlink that could leave rootfs/ is refused with
// ErrUnsafeImage; more than lim allows with ErrImageTooLarge (Stream: the
// archive's bytes; Bytes: file contents; Files: entries of rootfs/;
// FileBytes: one file), so a bundle Build wrote with lim unpacks with lim. Nothing is
// created through a symlink: every entry is made relative to its parent's
// descriptor, opened without following links (O_NOFOLLOW, O_EXCL,
// mkdirat, symlinkat). Setuid and setgid bits are cleared; owners are the
// caller's. On error dir holds part of the bundle: the caller removes it.
func Unpack(r io.Reader, dir string, lim Limits) (Config, error) {
	root, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Config{}, fmt.Errorf("bundle: open %s: %w", dir, err)
	}
	u := &unpacker{
		r:    &countReader{r: r, left: lim.Stream, limit: lim.Stream},
		root: root, lim: lim,
		kinds: map[string]uint32{},
		cache: -1,
	}
	defer u.close()
	cfg, err := u.run()
	if err != nil {
		return Config{}, fmt.Errorf("bundle: %w", err)
	}
	return cfg, nil
}

type unpacker struct {
	r     *countReader
	root  int
	lim   Limits
	kinds map[string]uint32 // names made so far -> mode type
	dirs  []string          // directories made, in order, with their modes
	modes []uint32
	// cache is the descriptor of the directory cacheName (entries come in
	// order, so most share their parent with the one before).
	cache     int
	cacheName string
	// out, if set, gets the records written again under prefix instead of
	// made below root (WritePrefixed).
	out    *newcWriter
	prefix string
}

func (u *unpacker) close() {
	if u.cache >= 0 {
		unix.Close(u.cache)
	}
	if u.root >= 0 {
		unix.Close(u.root)
	}
}

// header is the part of a newc header Unpack uses.
type header struct {
	mode     uint32
	fileSize int64
	name     string
}

func (u *unpacker) run() (Config, error) {
	var cfg Config
	var sawConfig bool
	var total int64
	for count := 0; ; count++ {
		h, err := u.header()
		if err != nil {
			return Config{}, err
		}
		if h.name == "TRAILER!!!" {
			break
		}
		if count >= u.lim.Files+2 { // config.json and rootfs, then the tree
			return Config{}, fmt.Errorf("%w: more than %d entries", ErrImageTooLarge, u.lim.Files)
		}
		if err := u.checkName(h); err != nil {
			return Config{}, err
		}
		if h.mode&modeType == modeReg {
			total += h.fileSize
		}
		if total > u.lim.Bytes {
			return Config{}, fmt.Errorf("%w: more than %d bytes of files (at %s)", ErrImageTooLarge, u.lim.Bytes, h.name)
		}
		if h.name == ConfigName {
			b, err := u.data(h.fileSize)
			if err != nil {
				return Config{}, err
			}
			if err := json.Unmarshal(b, &cfg); err != nil {
				return Config{}, fmt.Errorf("%w: config.json: %v", ErrUnsafeImage, err)
			}
			if err := u.create(h, bytes.NewReader(b)); err != nil {
				return Config{}, err
			}
			sawConfig = true
			continue
		}
		if err := u.create(h, u.r); err != nil {
			return Config{}, err
		}
	}
	// Nothing may follow the trailer: the archive is exactly the bundle.
	if n, err := io.ReadFull(u.r, make([]byte, 1)); n > 0 || !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("%w: bytes after the archive's trailer", ErrUnsafeImage)
	}
	if !sawConfig || u.kinds[RootName] != modeDir {
		return Config{}, fmt.Errorf("%w: the archive lacks %s or %s/", ErrUnsafeImage, ConfigName, RootName)
	}
	// Directory modes last, deepest first, so that a read-only directory
	// does not stop its own contents from being made.
	for i := len(u.dirs) - 1; u.out == nil && i >= 0; i-- {
		if err := u.chmodDir(u.dirs[i], u.modes[i]); err != nil {
			return Config{}, err
		}
	}
	return cfg, nil
}

// header reads and checks one newc header and its name.
func (u *unpacker) header() (header, error) {
	var b [110]byte
	if _, err := io.ReadFull(u.r, b[:]); err != nil {
		return header{}, fmt.Errorf("%w: truncated archive: %w", ErrUnsafeImage, noEOF(err))
	}
	if string(b[:6]) != "070701" {
		return header{}, fmt.Errorf("%w: not a newc cpio archive (magic %q)", ErrUnsafeImage, b[:6])
	}
	var f [13]uint64
	for i := range f {
		v, err := strconv.ParseUint(string(b[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			return header{}, fmt.Errorf("%w: header field %q is not hex", ErrUnsafeImage, b[6+8*i:14+8*i])
		}
		f[i] = v
	}
	h := header{mode: uint32(f[1]), fileSize: int64(f[6])}
	nameSize := f[11]
	if nameSize < 2 || nameSize > maxName+1 {
		return header{}, fmt.Errorf("%w: a name of %d bytes", ErrUnsafeImage, nameSize)
	}
	name := make([]byte, nameSize)
	if _, err := io.ReadFull(u.r, name); err != nil {
		return header{}, fmt.Errorf("%w: truncated archive: %w", ErrUnsafeImage, noEOF(err))
	}
	if name[nameSize-1] != 0 || bytes.IndexByte(name[:nameSize-1], 0) >= 0 {
		return header{}, fmt.Errorf("%w: a name with a NUL byte inside", ErrUnsafeImage)
	}
	h.name = string(name[:nameSize-1])
	if err := u.skipPad(); err != nil {
		return header{}, err
	}
	if h.name == "TRAILER!!!" && h.fileSize != 0 {
		return header{}, fmt.Errorf("%w: a trailer with data", ErrUnsafeImage)
	}
	return h, nil
}

// checkName refuses any record a bundle never holds.
func (u *unpacker) checkName(h header) error {
	typ := h.mode & modeType
	switch typ {
	case modeDir, modeReg, modeSymlink:
	default:
		return fmt.Errorf("%w: %s has file type %#o: a bundle holds directories, files and symlinks only (no device nodes, FIFOs or sockets)", ErrUnsafeImage, h.name, typ)
	}
	rel, inRoot := strings.CutPrefix(h.name, RootName+"/")
	switch {
	case h.name == ConfigName:
		if typ != modeReg || h.fileSize > maxConfig {
			return fmt.Errorf("%w: %s is not a file of at most %d bytes", ErrUnsafeImage, ConfigName, maxConfig)
		}
	case h.name == RootName:
		if typ != modeDir {
			return fmt.Errorf("%w: %s is not a directory", ErrUnsafeImage, RootName)
		}
	case !inRoot || !validName(rel):
		return fmt.Errorf("%w: %q is neither %s nor a clean path below %s/", ErrUnsafeImage, h.name, ConfigName, RootName)
	}
	if _, dup := u.kinds[h.name]; dup {
		return fmt.Errorf("%w: %s appears twice", ErrUnsafeImage, h.name)
	}
	if parent := path.Dir(h.name); parent != "." && u.kinds[parent] != modeDir {
		return fmt.Errorf("%w: %s is not below a directory of the archive (%s is a symlink, a file or missing)", ErrUnsafeImage, h.name, parent)
	}
	switch typ {
	case modeDir:
		if h.fileSize != 0 {
			return fmt.Errorf("%w: directory %s has data", ErrUnsafeImage, h.name)
		}
	case modeSymlink:
		if h.fileSize < 1 || h.fileSize > maxName {
			return fmt.Errorf("%w: symlink %s has a target of %d bytes", ErrUnsafeImage, h.name, h.fileSize)
		}
	case modeReg:
		if h.fileSize > u.lim.FileBytes {
			return fmt.Errorf("%w: %s is %d bytes, the limit for one file is %d", ErrImageTooLarge, h.name, h.fileSize, u.lim.FileBytes)
		}
	}
	return nil
}

// create makes the entry h below its parent's descriptor; a regular file's
// contents come from data.
func (u *unpacker) create(h header, data io.Reader) error {
	if u.out != nil {
		return u.copyRecord(h, data)
	}
	parent, base := path.Dir(h.name), path.Base(h.name)
	pfd, err := u.dirFD(parent)
	if err != nil {
		return err
	}
	typ := h.mode & modeType
	switch typ {
	case modeDir:
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return fmt.Errorf("mkdir %s: %w", h.name, err)
		}
		u.dirs = append(u.dirs, h.name)
		u.modes = append(u.modes, h.mode&0o1777)
	case modeSymlink:
		b, err := u.data(h.fileSize)
		if err != nil {
			return err
		}
		target := string(b)
		if err := checkTarget(strings.TrimPrefix(h.name, RootName+"/"), target); err != nil {
			return err
		}
		if err := unix.Symlinkat(target, pfd, base); err != nil {
			return fmt.Errorf("symlink %s: %w", h.name, err)
		}
	case modeReg:
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("create %s: %w", h.name, err)
		}
		f := os.NewFile(uintptr(fd), h.name)
		_, err = io.CopyN(f, data, h.fileSize)
		if err == nil {
			err = unix.Fchmod(fd, h.mode&0o1777) // no setuid, no setgid
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: truncated archive in %s", ErrUnsafeImage, h.name)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", h.name, err)
		}
		if err := u.skipPad(); err != nil {
			return err
		}
	}
	u.kinds[h.name] = typ
	return nil
}

// dirFD returns a descriptor of the directory name ("." is dir itself),
// opened component by component without following links.
func (u *unpacker) dirFD(name string) (int, error) {
	if name == "." {
		return u.root, nil
	}
	if u.cache >= 0 && u.cacheName == name {
		return u.cache, nil
	}
	fd, err := u.openDir(name, unix.O_PATH)
	if err != nil {
		return -1, err
	}
	if u.cache >= 0 {
		unix.Close(u.cache)
	}
	u.cache, u.cacheName = fd, name
	return fd, nil
}

// openDir opens the directory name below the root with flags, every
// component with O_NOFOLLOW.
func (u *unpacker) openDir(name string, flags int) (int, error) {
	fd := u.root
	for i, c := range strings.Split(name, "/") {
		fl := unix.O_PATH
		if i == strings.Count(name, "/") {
			fl = flags
		}
		next, err := unix.Openat(fd, c, fl|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if fd != u.root {
			unix.Close(fd)
		}
		if err != nil {
			return -1, fmt.Errorf("open %s: %w", name, err)
		}
		fd = next
	}
	return fd, nil
}

func (u *unpacker) chmodDir(name string, mode uint32) error {
	fd, err := u.openDir(name, unix.O_RDONLY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	return nil
}

// data reads n bytes of a record's data (n already bounded) and its padding.
func (u *unpacker) data(n int64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(u.r, b); err != nil {
		return nil, fmt.Errorf("%w: truncated archive: %w", ErrUnsafeImage, noEOF(err))
	}
	return b, u.skipPad()
}

// skipPad reads the zero bytes up to the next multiple of 4.
func (u *unpacker) skipPad() error {
	if r := u.r.n % 4; r != 0 {
		if _, err := io.ReadFull(u.r, make([]byte, 4-r)); err != nil {
			return fmt.Errorf("%w: truncated archive: %w", ErrUnsafeImage, noEOF(err))
		}
	}
	return nil
}

// noEOF turns the end of input in the middle of a record into
// io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// countReader counts what it reads and fails past the limit.
type countReader struct {
	r           io.Reader
	n           int64
	left, limit int64
}

func (c *countReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// An archive that ends exactly at the limit is fine.
		if n, err := c.r.Read(make([]byte, 1)); n == 0 && err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("%w: the archive is larger than %d bytes", ErrImageTooLarge, c.limit)
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.left -= int64(n)
	return n, err
}
