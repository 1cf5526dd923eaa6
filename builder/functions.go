package builder

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/microfaas/microfaas/initramfs"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/runtime/functions"
	"github.com/microfaas/microfaas/target"
)

// ErrCannotRun means a function's executable cannot run on a worker: wrong
// architecture, or dynamically linked without its loader.
var ErrCannotRun = errors.New("function cannot run on the worker")

// BusyboxPath is the static busybox (Debian's busybox-static) that script
// functions get as /bin/sh.
var BusyboxPath = "/bin/busybox"

// platform is the OCI platform of a target's container images.
func platform(t *target.Target) v1.Platform {
	return v1.Platform{OS: "linux", Architecture: t.OCIArch, Variant: t.OCIVariant}
}

// functionOptions turns one --function name=spec into initramfs content.
// spec is a path to an executable, or oci:REF for a container image.
func functionOptions(ctx context.Context, arch *target.Target, fname, spec string) ([]initramfs.Option, string, error) {
	if ref, ok := strings.CutPrefix(spec, "oci:"); ok {
		return imageFunction(ctx, arch, fname, ref)
	}
	b, err := os.ReadFile(spec)
	if err != nil {
		return nil, "", fmt.Errorf("function %s: %w", fname, err)
	}
	opts := []initramfs.Option{initramfs.WithBytes("functions/"+fname, b, 0o755)}
	switch {
	case bytes.HasPrefix(b, []byte("#!")):
		more, err := scriptInterpreter(arch, fname, b)
		if err != nil {
			return nil, "", err
		}
		opts = append(opts, more...)
	default:
		if err := checkELF(fname, spec, b, arch.ELF, nil); err != nil {
			return nil, "", err
		}
	}
	return opts, cache.BytesSHA256(b), nil
}

// checkELF refuses executables of the wrong machine, and dynamically linked
// ones whose loader the rootfs (nil: the initramfs, which has none) lacks.
func checkELF(fname, what string, b []byte, machine elf.Machine, rootfs *tree) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%w: function %s: %s is neither an ELF executable nor a #! script", ErrCannotRun, fname, what)
	}
	if f.Machine != machine {
		return fmt.Errorf("%w: function %s: %s is built for %s, the worker is %s: rebuild it for the worker (e.g. GOARCH)",
			ErrCannotRun, fname, what, f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		interp, _ := io.ReadAll(p.Open())
		loader := strings.TrimRight(string(interp), "\x00")
		if rootfs == nil || !rootfs.exists(loader) {
			return fmt.Errorf("%w: function %s: %s is dynamically linked (needs %s, which the worker lacks): build it static (CGO_ENABLED=0, -static) or ship it in a container image that has its loader",
				ErrCannotRun, fname, what, loader)
		}
	}
	return nil
}

// scriptInterpreter supports /bin/sh scripts by adding a static busybox
// and its applets.
func scriptInterpreter(arch *target.Target, fname string, script []byte) ([]initramfs.Option, error) {
	line, _, _ := bytes.Cut(script[2:], []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) == 0 || (fields[0] != "/bin/sh" && fields[0] != "/bin/busybox") {
		return nil, fmt.Errorf("%w: function %s: interpreter %q is not in the worker: only /bin/sh scripts are supported (a static busybox is added); build other functions as static binaries or container images",
			ErrCannotRun, fname, string(line))
	}
	// The host's busybox is the only one we have; it must be the worker's machine.
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("function %s is a shell script and needs a static busybox: install busybox-static (make deps): %w", fname, err)
	}
	if f, err := elf.NewFile(bytes.NewReader(bb)); err == nil && f.Machine != arch.ELF {
		return nil, fmt.Errorf("%w: function %s: script functions need a static busybox for %s (%s is %s); use a static binary",
			ErrCannotRun, fname, arch, BusyboxPath, f.Machine)
	}
	if err := checkELF(fname, BusyboxPath, bb, arch.ELF, nil); err != nil {
		return nil, err
	}
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	opts := []initramfs.Option{initramfs.WithBytes("bin/busybox", bb, 0o755)}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" && !strings.Contains(applet, "/") {
			opts = append(opts, initramfs.WithSymlink("bin/"+applet, "busybox"))
		}
	}
	return opts, nil
}

// imageFunction pulls a container image (registry, OCI layout directory or
// `docker save` tarball), checks it can run on the worker, and lays out its
// flattened filesystem and config under /functions/NAME.
func imageFunction(ctx context.Context, arch *target.Target, fname, ref string) ([]initramfs.Option, string, error) {
	plat, machine := platform(arch), arch.ELF
	img, err := loadImage(ctx, ref, plat)
	if err != nil {
		return nil, "", fmt.Errorf("function %s: image %s: %w", fname, ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, "", fmt.Errorf("function %s: image config: %w", fname, err)
	}
	if cf.OS != plat.OS || cf.Architecture != plat.Architecture {
		return nil, "", fmt.Errorf("%w: function %s: image %s is %s/%s, the worker is %s/%s",
			ErrCannotRun, fname, ref, cf.OS, cf.Architecture, plat.OS, plat.Architecture)
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, "", err
	}
	t, err := flatten(img, imageLimits)
	if err != nil {
		return nil, "", fmt.Errorf("function %s: flatten image: %w", fname, err)
	}
	if t.dropped > 0 || t.stripped > 0 {
		slog.Info("function image changed to run on a worker", "function", fname,
			"device_nodes_dropped", t.dropped, "setuid_setgid_cleared", t.stripped)
	}
	icfg := functions.ImageConfig{Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd, Env: cf.Config.Env,
		WorkingDir: cf.Config.WorkingDir, User: cf.Config.User}
	argv := icfg.Argv()
	if len(argv) == 0 {
		return nil, "", fmt.Errorf("%w: function %s: image %s has no entrypoint or cmd", ErrCannotRun, fname, ref)
	}
	entry, ok := t.resolve(argv[0])
	if !ok {
		return nil, "", fmt.Errorf("%w: function %s: entrypoint %s is not in image %s", ErrCannotRun, fname, argv[0], ref)
	}
	if err := checkELF(fname, argv[0], t.files[entry].data, machine, t); err != nil {
		if !bytes.HasPrefix(t.files[entry].data, []byte("#!")) {
			return nil, "", err
		}
	}
	cfgJSON, _ := json.Marshal(icfg)
	root := "functions/" + fname
	opts := []initramfs.Option{initramfs.WithBytes(root+"/config.json", cfgJSON, 0o644), initramfs.WithEmptyDir(root+"/rootfs", 0o755)}
	for _, p := range t.sorted() {
		e := t.files[p]
		dst := root + "/rootfs/" + p
		switch e.typ {
		case tar.TypeDir:
			opts = append(opts, initramfs.WithEmptyDir(dst, e.mode))
		case tar.TypeSymlink:
			opts = append(opts, initramfs.WithSymlink(dst, e.target))
		default:
			opts = append(opts, initramfs.WithBytes(dst, e.data, e.mode))
		}
	}
	return opts, digest.String(), nil
}

func loadImage(ctx context.Context, ref string, plat v1.Platform) (v1.Image, error) {
	if fi, err := os.Stat(ref); err == nil {
		if fi.IsDir() {
			idx, err := layout.ImageIndexFromPath(ref)
			if err != nil {
				return nil, fmt.Errorf("not an OCI layout directory: %w", err)
			}
			return pickPlatform(idx, plat)
		}
		return tarball.ImageFromPath(ref, nil)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("not a file, OCI layout directory or image reference: %w", err)
	}
	return remote.Image(r, remote.WithContext(ctx), remote.WithPlatform(plat))
}

// pickPlatform chooses the image for plat in an index (nested indexes too).
func pickPlatform(idx v1.ImageIndex, plat v1.Platform) (v1.Image, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var seen []string
	for _, d := range m.Manifests {
		if d.MediaType.IsIndex() {
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			if img, err := pickPlatform(child, plat); err == nil {
				return img, nil
			}
			continue
		}
		if d.Platform == nil || (d.Platform.OS == plat.OS && d.Platform.Architecture == plat.Architecture) {
			return idx.Image(d.Digest)
		}
		seen = append(seen, d.Platform.OS+"/"+d.Platform.Architecture)
	}
	return nil, fmt.Errorf("%w: no %s/%s image in the index (has: %s)", ErrCannotRun, plat.OS, plat.Architecture, strings.Join(seen, ", "))
}

// ErrUnsafeImage means an image's filesystem would write or point outside
// its own rootfs in the worker: an entry below a symlink (the kernel's
// initramfs unpacker follows the link), a link whose meaning depends on
// ".." after another link, or a hard link to something it does not have.
var ErrUnsafeImage = errors.New("image filesystem is unsafe")

// ErrImageTooLarge means an image holds more than Limits allow: a
// decompression bomb is refused, not read into memory.
var ErrImageTooLarge = errors.New("image is too large")

// Limits bound what flattening one image may read and keep in memory.
type Limits struct {
	Stream    int64 // uncompressed layer bytes read, all layers (overwritten and whited-out entries count)
	Bytes     int64 // the flattened tree: file contents (each hard link again: it is a copy in the cpio), names and link targets
	Files     int   // entries read, of any kind
	FileBytes int64 // one file
}

// DefaultLimits fit an initramfs a worker can boot: a BeagleBone has 512 MiB
// of RAM for the kernel, the unpacked initramfs and the functions.
var DefaultLimits = Limits{Stream: 1 << 30, Bytes: 256 << 20, Files: 65536, FileBytes: 128 << 20}

// imageLimits are the limits imageFunction applies (tests lower them).
var imageLimits = DefaultLimits

// tree is a flattened image filesystem in memory. dropped and stripped
// count the device nodes left out and the setuid/setgid bits cleared.
type tree struct {
	files             map[string]entry
	dropped, stripped int
}

type entry struct {
	typ    byte
	mode   uint64
	data   []byte
	target string
}

// flatten reads an image's layers into a tree that cannot reach outside
// itself once it lies under /functions/NAME/rootfs in the initramfs:
//   - an entry below a symlink or a file is refused (the unpacker would
//     follow the link: issue 18, attack 1);
//   - every symlink is rewritten to a relative target that climbs only to
//     the rootfs root and then descends without "..". Inside the sandbox
//     (rootfs is /) it means what it meant: absolute targets are kept
//     meaningful, not refused (real images need /lib64/ld-linux… -> /lib/…),
//     and ".." above the root stops at the root, as the kernel does at /.
//     Seen from the worker's own root it can no longer leave the rootfs.
//     A target with ".." after a component that is itself a link is refused:
//     its meaning depends on where that link points;
//   - hard links become copies of regular files of the tree (counted again
//     against Limits.Bytes), resolved after all layers are read;
//   - device nodes and FIFOs are dropped (the sandbox mounts its own /dev),
//     setuid and setgid bits cleared;
//   - whiteouts are applied by mutate.Extract, which refuses ".." names; a
//     whiteout never writes, and the first spelling of a path wins as in
//     Extract (upper layers come first).
func flatten(img v1.Image, lim Limits) (*tree, error) {
	rc := mutate.Extract(boundedImage{Image: img, left: &stream{left: lim.Stream, limit: lim.Stream}})
	defer rc.Close()
	t := &tree{files: map[string]entry{}}
	hardlinks := map[string]string{}
	var order []string // hard links in stream order, for deterministic errors
	var total int64
	var count int
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			// Extract writes the tar trailer before it reports its error
			// (an unsafe name, a bad layer digest, the stream limit): only
			// the end of the pipe tells whether the tree is whole.
			if _, err := io.Copy(io.Discard, rc); err != nil {
				return nil, err
			}
			break
		}
		if err != nil {
			return nil, err
		}
		if count++; count > lim.Files {
			return nil, fmt.Errorf("%w: more than %d entries: make the image smaller (a slim or distroless base, one layer)", ErrImageTooLarge, lim.Files)
		}
		p := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if p == "" {
			continue
		}
		if _, seen := t.files[p]; seen || hardlinks[p] != "" {
			continue
		}
		total += int64(len(p) + len(h.Linkname))
		if h.Typeflag == tar.TypeReg {
			if h.Size > lim.FileBytes {
				return nil, fmt.Errorf("%w: %s is %d bytes, the limit for one file is %d: leave it out of the function's image", ErrImageTooLarge, p, h.Size, lim.FileBytes)
			}
			total += h.Size
		}
		if total > lim.Bytes {
			return nil, fmt.Errorf("%w: more than %d bytes of files (at %s): make the image smaller (a slim or distroless base)", ErrImageTooLarge, lim.Bytes, p)
		}
		mode := uint64(h.Mode) & 0o7777
		if mode&0o6000 != 0 {
			mode &^= 0o6000 // a function must not gain another uid or gid
			t.stripped++
		}
		switch h.Typeflag {
		case tar.TypeDir:
			t.files[p] = entry{typ: tar.TypeDir, mode: mode}
		case tar.TypeSymlink:
			if h.Linkname == "" {
				return nil, fmt.Errorf("%w: symlink %s has an empty target: remove it from the image", ErrUnsafeImage, p)
			}
			t.files[p] = entry{typ: tar.TypeSymlink, target: h.Linkname}
		case tar.TypeLink:
			hardlinks[p] = strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")
			order = append(order, p)
		case tar.TypeReg:
			b := make([]byte, h.Size)
			if _, err := io.ReadFull(tr, b); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			t.files[p] = entry{typ: tar.TypeReg, mode: mode, data: b}
		default:
			t.dropped++ // device nodes, FIFOs
		}
	}
	for _, p := range order {
		target, ok := t.files[hardlinks[p]]
		if !ok || target.typ != tar.TypeReg {
			return nil, fmt.Errorf("%w: hard link %s -> %s: the image has no regular file there: make it a copy or a symlink", ErrUnsafeImage, p, hardlinks[p])
		}
		if total += int64(len(target.data)); total > lim.Bytes {
			return nil, fmt.Errorf("%w: more than %d bytes of files with hard links copied (at %s): make the image smaller", ErrImageTooLarge, lim.Bytes, p)
		}
		t.files[p] = target
	}
	if err := t.confine(); err != nil {
		return nil, err
	}
	return t, nil
}

// confine refuses entries below a non-directory and rewrites every symlink
// to stay inside the tree (see flatten).
func (t *tree) confine() error {
	for _, p := range t.sorted() {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			e, ok := t.files[d]
			switch {
			case !ok || e.typ == tar.TypeDir:
			case e.typ == tar.TypeSymlink:
				return fmt.Errorf("%w: %s is below the symlink %s -> %s, and the worker's initramfs unpacker would follow the link and write it outside the image: rebuild the image with %s as a real directory",
					ErrUnsafeImage, p, d, e.target, d)
			default:
				return fmt.Errorf("%w: %s is below the file %s: rebuild the image without one of them", ErrUnsafeImage, p, d)
			}
		}
	}
	for _, p := range t.sorted() {
		e := t.files[p]
		if e.typ != tar.TypeSymlink {
			continue
		}
		target, err := t.inRoot(p, e.target)
		if err != nil {
			return err
		}
		e.target = target
		t.files[p] = e
	}
	return nil
}

// inRoot rewrites the target of the link at p as "../"×depth(p) followed by
// a path without "..": from p's directory (real directories, see confine)
// it climbs exactly to the rootfs root and then descends.
func (t *tree) inRoot(p, target string) (string, error) {
	var cur []string // resolved components below the root
	if !path.IsAbs(target) {
		if dir := path.Dir(p); dir != "." {
			cur = strings.Split(dir, "/")
		}
	}
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			for i := range cur {
				if e, ok := t.files[strings.Join(cur[:i+1], "/")]; ok && e.typ == tar.TypeSymlink {
					return "", fmt.Errorf("%w: symlink %s -> %s climbs out of the symlink %s with \"..\": its meaning depends on that link; point it at the path it means", ErrUnsafeImage, p, target, strings.Join(cur[:i+1], "/"))
				}
			}
			if len(cur) > 0 {
				cur = cur[:len(cur)-1] // at the root, ".." stays there
			}
		default:
			cur = append(cur, c)
		}
	}
	up := strings.Count(p, "/")
	rel := strings.TrimSuffix(strings.Repeat("../", up)+strings.Join(cur, "/"), "/")
	if rel == "" {
		rel = "."
	}
	return rel, nil
}

// boundedImage counts the uncompressed bytes mutate.Extract reads from all
// layers, whiteouts and overwritten files included, and fails the read past
// the limit: Extract keeps state for every entry it reads, even the ones it
// never hands to flatten.
type boundedImage struct {
	v1.Image
	left *stream
}

// stream is the budget of uncompressed bytes all layers share.
type stream struct{ left, limit int64 }

func (b boundedImage) Layers() ([]v1.Layer, error) {
	ls, err := b.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = boundedLayer{Layer: l, left: b.left}
	}
	return out, nil
}

type boundedLayer struct {
	v1.Layer
	left *stream
}

func (l boundedLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Uncompressed()
	if err != nil {
		return nil, err
	}
	return &boundedReader{rc: rc, left: l.left}, nil
}

type boundedReader struct {
	rc   io.ReadCloser
	left *stream
}

func (r *boundedReader) Read(p []byte) (int, error) {
	if r.left.left <= 0 {
		// A layer that ends exactly at the limit is fine.
		var one [1]byte
		if n, err := r.rc.Read(one[:]); n == 0 && err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("%w: its layers hold more than %d uncompressed bytes: make the image smaller (a slim or distroless base, fewer layers)", ErrImageTooLarge, r.left.limit)
	}
	if int64(len(p)) > r.left.left {
		p = p[:r.left.left]
	}
	n, err := r.rc.Read(p)
	r.left.left -= int64(n)
	return n, err
}

func (r *boundedReader) Close() error { return r.rc.Close() }

// resolve follows symlinks inside the tree and returns the regular file p
// names (absolute inside the image).
func (t *tree) resolve(p string) (string, bool) {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	for hops := 0; hops < 16; hops++ {
		e, ok := t.files[p]
		if !ok {
			return "", false
		}
		if e.typ != tar.TypeSymlink {
			return p, e.typ == tar.TypeReg
		}
		target := e.target
		if !path.IsAbs(target) {
			target = path.Join(path.Dir("/"+p), target)
		}
		p = strings.TrimPrefix(path.Clean(target), "/")
	}
	return "", false
}

func (t *tree) exists(p string) bool { _, ok := t.resolve(p); return ok }

func (t *tree) sorted() []string {
	names := make([]string, 0, len(t.files))
	for n := range t.files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
