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
	t, err := flatten(img)
	if err != nil {
		return nil, "", fmt.Errorf("function %s: flatten image: %w", fname, err)
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

// tree is a flattened image filesystem in memory.
type tree struct{ files map[string]entry }

type entry struct {
	typ    byte
	mode   uint64
	data   []byte
	target string
}

func flatten(img v1.Image) (*tree, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	t := &tree{files: map[string]entry{}}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return t, nil
		}
		if err != nil {
			return nil, err
		}
		p := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if p == "" {
			continue
		}
		switch h.Typeflag {
		case tar.TypeDir:
			t.files[p] = entry{typ: tar.TypeDir, mode: uint64(h.Mode) & 0o7777}
		case tar.TypeSymlink:
			t.files[p] = entry{typ: tar.TypeSymlink, target: h.Linkname}
		case tar.TypeLink:
			target := strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")
			t.files[p] = t.files[target]
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, err
			}
			t.files[p] = entry{typ: tar.TypeReg, mode: uint64(h.Mode) & 0o7777, data: b}
		}
	}
}

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
