package bundle

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// The bundle's fixed names.
const (
	ConfigName = "config.json"
	RootName   = "rootfs"
)

// newc mode bits.
const (
	modeDir     = 0o040000
	modeReg     = 0o100000
	modeSymlink = 0o120000
	modeType    = 0o170000
)

// maxName bounds a name or a link target (PATH_MAX).
const maxName = 4095

// maxConfig bounds config.json.
const maxConfig = 1 << 20

// Encode writes t and cfg as a bundle: an uncompressed newc cpio archive of
// config.json, rootfs/ and rootfs/<path> for every path in byte order,
// directories a path needs but t lacks added (mode 0755). Owner 0, times 0,
// inodes numbered in order: the same tree and config give the same bytes,
// so the same digest. Setuid and setgid bits are never written. A tree with
// an entry below a symlink or a file, a name that is not clean, or a
// symlink that could leave rootfs/ (anything but "../"×n then a path without
// "..", n at most the link's depth: what bundle/oci.Flatten writes) is
// refused with ErrUnsafeImage.
func Encode(w io.Writer, t *Tree, cfg Config) error {
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	names, err := encodeNames(t)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	a := &newcWriter{w: bw}
	a.record(ConfigName, modeReg|0o644, cfgJSON)
	a.record(RootName, modeDir|0o755, nil)
	for _, p := range names {
		e, ok := t.Files[p]
		switch {
		case !ok || e.Type == tar.TypeDir:
			mode := int64(0o755)
			if ok {
				mode = e.Mode
			}
			a.record(RootName+"/"+p, modeDir|perm(mode), nil)
		case e.Type == tar.TypeSymlink:
			a.record(RootName+"/"+p, modeSymlink|0o777, []byte(e.Target))
		default:
			a.record(RootName+"/"+p, modeReg|perm(e.Mode), e.Data)
		}
	}
	a.record("TRAILER!!!", 0, nil)
	if a.err != nil {
		return a.err
	}
	return bw.Flush()
}

// perm is the permission bits a bundle keeps: no setuid, no setgid.
func perm(mode int64) uint32 { return uint32(mode) & 0o1777 }

// encodeNames checks t and returns its paths plus the directories they need
// and t lacks, in byte order.
func encodeNames(t *Tree) ([]string, error) {
	all := map[string]bool{}
	for p, e := range t.Files {
		if !validName(p) {
			return nil, fmt.Errorf("%w: %q is not a clean path inside the image", ErrUnsafeImage, p)
		}
		switch e.Type {
		case tar.TypeDir, tar.TypeReg:
		case tar.TypeSymlink:
			if err := checkTarget(p, e.Target); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w: %s has type %q: a bundle holds directories, files and symlinks only", ErrUnsafeImage, p, e.Type)
		}
		all[p] = true
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if de, ok := t.Files[d]; ok && de.Type != tar.TypeDir {
				return nil, fmt.Errorf("%w: %s is below %s, which is not a directory", ErrUnsafeImage, p, d)
			}
			all[d] = true
		}
	}
	names := make([]string, 0, len(all))
	for p := range all {
		names = append(names, p)
	}
	sort.Strings(names)
	return names, nil
}

// validName: relative, clean, no "." or ".." component, no NUL, not too long.
func validName(p string) bool {
	if p == "" || len(p) > maxName || strings.ContainsRune(p, 0) || path.IsAbs(p) || path.Clean(p) != p {
		return false
	}
	for _, c := range strings.Split(p, "/") {
		if c == "." || c == ".." {
			return false
		}
	}
	return true
}

// checkTarget accepts the confined form of a symlink target at p (relative
// to the rootfs): "." or "../"×n followed by components that are neither
// "." nor "..", with n at most the number of directories above p, so the
// target climbs at most to the rootfs root and then only descends.
func checkTarget(p, target string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: symlink %s -> %q %s", ErrUnsafeImage, p, target, why)
	}
	if target == "" || len(target) > maxName || strings.ContainsRune(target, 0) {
		return bad("has an empty, too long or NUL-holding target")
	}
	if target == "." {
		return nil
	}
	if path.IsAbs(target) {
		return bad("is absolute: it must be relative to stay inside the image")
	}
	up, descending := 0, false
	for _, c := range strings.Split(target, "/") {
		switch {
		case c == ".." && !descending:
			up++
		case c == "" || c == "." || c == "..":
			return bad("is not of the form ../…/path: it could climb out of the image")
		default:
			descending = true
		}
	}
	if up > strings.Count(p, "/") {
		return bad("climbs above the image's root")
	}
	return nil
}

// newcWriter writes newc records; the first error sticks.
type newcWriter struct {
	w   io.Writer
	ino int
	n   int64
	err error
}

func (a *newcWriter) record(name string, mode uint32, data []byte) {
	nlink := 1
	if mode&modeType == modeDir {
		nlink = 2
	}
	a.header(name, mode, int64(len(data)), nlink)
	a.write(data)
	a.pad()
}

// header writes a record's header and name (padded): size bytes of data,
// then padding, must follow. Inodes are numbered in order.
func (a *newcWriter) header(name string, mode uint32, size int64, nlink int) {
	if a.err != nil {
		return
	}
	ino := 0
	if name != "TRAILER!!!" {
		a.ino++
		ino = a.ino
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	a.write([]byte(hdr))
	a.write([]byte(name))
	a.write([]byte{0})
	a.pad()
}

func (a *newcWriter) write(b []byte) {
	if a.err != nil {
		return
	}
	n, err := a.w.Write(b)
	a.n += int64(n)
	a.err = err
}

func (a *newcWriter) pad() {
	if r := a.n % 4; r != 0 {
		a.write(make([]byte, 4-r))
	}
}

// Digest is the SHA-256 of r's bytes as "sha256:<hex>": a bundle's name.
func Digest(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// Verify reads r to its end and returns ErrDigestMismatch unless its bytes
// hash to want ("sha256:<hex>").
func Verify(r io.Reader, want string) error {
	got, err := Digest(r)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%w: the bytes hash to %s, not %s: fetch the bundle again", ErrDigestMismatch, got, want)
	}
	return nil
}
