// Package bundle is a function's image as a worker receives it: one
// uncompressed newc cpio archive holding config.json (the image's command,
// environment, working directory and user) and rootfs/ (its flattened
// filesystem). The orchestrator writes it with Encode, names it by its
// SHA-256 (Digest), and the worker checks that digest, then unpacks it with
// Unpack, which trusts nothing in the archive.
//
// It imports no container-registry code: mfinit links it. Turning an OCI
// image into a Tree is bundle/oci's job.
package bundle

import (
	"archive/tar"
	"errors"
	"path"
	"sort"
	"strings"
)

// Config is the part of a container image's config a worker needs.
type Config struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workdir,omitempty"`
	// User is the image's USER: name or uid, optionally :group or :gid,
	// resolved against the image's /etc/passwd and /etc/group.
	User string `json:"user,omitempty"`
}

// Argv is the command an image runs: entrypoint then cmd, as container
// runtimes do.
func (c Config) Argv() []string {
	return append(append([]string{}, c.Entrypoint...), c.Cmd...)
}

// Watchdog reports whether the image is an OpenFaaS watchdog image (the
// classic watchdog or of-watchdog): its command is fwatchdog, which serves
// HTTP instead of reading stdin.
func (c Config) Watchdog() bool {
	argv := c.Argv()
	return len(argv) > 0 && path.Base(argv[0]) == "fwatchdog"
}

// ErrUnsafeImage means an image's filesystem would write or point outside
// its own rootfs: an entry below a symlink or a file, a link whose meaning
// depends on ".." after another link, a hard link to something it does not
// have, a device node or a name that climbs out of the bundle.
var ErrUnsafeImage = errors.New("image filesystem is unsafe")

// ErrImageTooLarge means an image or a bundle holds more than Limits allow:
// a decompression bomb is refused, not read into memory.
var ErrImageTooLarge = errors.New("image is too large")

// ErrDigestMismatch means a bundle's bytes do not hash to the digest it was
// asked for by: it must not run.
var ErrDigestMismatch = errors.New("bundle digest mismatch")

// ErrCannotRun means a function's executable cannot run on a worker: no
// image for its platform, wrong architecture, no entrypoint, or dynamically
// linked without its loader.
var ErrCannotRun = errors.New("function cannot run on the worker")

// Limits bound what flattening an image, or unpacking a bundle, may read
// and keep.
type Limits struct {
	Stream    int64 // bytes read: uncompressed layer bytes of all layers (overwritten and whited-out entries count), or the bundle archive
	Bytes     int64 // the flattened tree: file contents (each hard link again: it is a copy), names and link targets
	Files     int   // entries read, of any kind
	FileBytes int64 // one file
}

// DefaultLimits fit a worker: a BeagleBone has 512 MiB of RAM for the
// kernel, the unpacked initramfs, the bundle and the function.
var DefaultLimits = Limits{Stream: 1 << 30, Bytes: 256 << 20, Files: 65536, FileBytes: 128 << 20}

// Entry is one file of a Tree. Type is tar.TypeDir, tar.TypeReg or
// tar.TypeSymlink; Mode holds the permission bits (setuid and setgid
// cleared by whoever built the tree); Data a regular file's contents;
// Target a symlink's target.
type Entry struct {
	Type   byte
	Mode   int64
	Data   []byte
	Target string
}

// Tree is a flattened image filesystem in memory: paths relative to the
// image's root, without a leading "/". Dropped and Stripped count the device
// nodes left out and the setuid/setgid bits cleared while flattening.
type Tree struct {
	Files             map[string]Entry
	Dropped, Stripped int
}

// maxHops bounds the symlinks Resolve follows, as the kernel's ELOOP does.
const maxHops = 40

// Resolve follows symlinks inside the tree, in every component as the kernel
// would with the tree as its root, and returns the path of the regular file
// p names; ok is false when p names nothing, a directory, or a loop.
func (t *Tree) Resolve(p string) (string, bool) {
	todo := splitPath(p)
	var cur []string // resolved components, below the root
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case ".":
			continue
		case "..":
			if len(cur) > 0 {
				cur = cur[:len(cur)-1] // at the root, ".." stays there
			}
			continue
		}
		name := strings.Join(append(cur, c), "/")
		e, ok := t.Files[name]
		if !ok {
			if len(todo) == 0 {
				return "", false
			}
			// A directory the tree does not list but holds entries below
			// (layers need not have one entry per directory).
			cur = append(cur, c)
			continue
		}
		switch e.Type {
		case tar.TypeSymlink:
			if hops++; hops > maxHops {
				return "", false
			}
			if path.IsAbs(e.Target) {
				cur = nil
			}
			todo = append(splitPath(e.Target), todo...)
		case tar.TypeDir:
			cur = append(cur, c)
		default:
			if len(todo) > 0 {
				return "", false // a file used as a directory
			}
			cur = append(cur, c)
		}
	}
	name := strings.Join(cur, "/")
	e, ok := t.Files[name]
	return name, ok && e.Type == tar.TypeReg
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

// Sorted is the tree's paths in byte order: every directory before what it
// holds.
func (t *Tree) Sorted() []string {
	names := make([]string, 0, len(t.Files))
	for n := range t.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
