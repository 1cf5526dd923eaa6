package builder

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/microfaas/microfaas/bundle"
	"github.com/microfaas/microfaas/bundle/oci"
	"github.com/microfaas/microfaas/initramfs"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/target"
)

// ErrCannotRun means a function's executable cannot run on a worker: wrong
// architecture, or dynamically linked without its loader (bundle's error).
var ErrCannotRun = bundle.ErrCannotRun

// BusyboxPath is the static busybox (Debian's busybox-static) that script
// functions get as /bin/sh.
var BusyboxPath = "/bin/busybox"

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
		if err := checkELF(fname, spec, b, arch.ELF); err != nil {
			return nil, "", err
		}
	}
	return opts, cache.BytesSHA256(b), nil
}

// checkELF refuses executables of the wrong machine, and dynamically linked
// ones: the initramfs has no loader. (Images are checked by oci.Check.)
func checkELF(fname, what string, b []byte, machine elf.Machine) error {
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
		return fmt.Errorf("%w: function %s: %s is dynamically linked (needs %s, which the worker lacks): build it static (CGO_ENABLED=0, -static) or ship it in a container image that has its loader",
			ErrCannotRun, fname, what, loader)
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
	if err := checkELF(fname, BusyboxPath, bb, arch.ELF); err != nil {
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
// `docker save` tarball), flattens and checks it as run-time deploys do
// (bundle/oci: one flattening for both), and lays out its filesystem and
// config under /functions/NAME/{config.json,rootfs/}.
func imageFunction(ctx context.Context, arch *target.Target, fname, ref string) ([]initramfs.Option, string, error) {
	res := &oci.Resolver{Keychain: authn.DefaultKeychain, Insecure: localRegistry(ref)}
	rs, err := res.Resolve(ctx, ref, []v1.Platform{oci.Platform(arch)})
	if err != nil {
		return nil, "", fmt.Errorf("function %s: image %s: %w", fname, ref, err)
	}
	img := rs[0].Image
	cfg, err := oci.ImageConfig(img)
	if err != nil {
		return nil, "", fmt.Errorf("function %s: %w", fname, err)
	}
	t, err := oci.Flatten(img, imageLimits)
	if err != nil {
		return nil, "", fmt.Errorf("function %s: flatten image: %w", fname, err)
	}
	if t.Dropped > 0 || t.Stripped > 0 {
		slog.Info("function image changed to run on a worker", "function", fname,
			"device_nodes_dropped", t.Dropped, "setuid_setgid_cleared", t.Stripped)
	}
	if err := oci.Check(t, cfg, arch.ELF); err != nil {
		return nil, "", fmt.Errorf("function %s: image %s: %w", fname, ref, err)
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, "", err
	}
	root := "functions/" + fname
	opts := []initramfs.Option{initramfs.WithBytes(root+"/"+bundle.ConfigName, cfgJSON, 0o644), initramfs.WithEmptyDir(root+"/"+bundle.RootName, 0o755)}
	for _, p := range t.Sorted() {
		e := t.Files[p]
		dst := root + "/" + bundle.RootName + "/" + p
		switch e.Type {
		case tar.TypeDir:
			opts = append(opts, initramfs.WithEmptyDir(dst, uint64(e.Mode)))
		case tar.TypeSymlink:
			opts = append(opts, initramfs.WithSymlink(dst, e.Target))
		default:
			opts = append(opts, initramfs.WithBytes(dst, e.Data, uint64(e.Mode)))
		}
	}
	return opts, rs[0].Digest, nil
}

// localRegistry keeps mfbuild's pulls from a registry on this machine or the
// local network working over plain HTTP, as go-containerregistry allows by
// default (loopback, private addresses, *.local); bundle/oci otherwise
// refuses plain HTTP.
func localRegistry(ref string) []string {
	r, err := name.ParseReference(ref)
	if err != nil || r.Context().Registry.Scheme() != "http" {
		return nil
	}
	return []string{r.Context().RegistryStr()}
}

// The image errors and limits are bundle's: mfbuild and run-time deploys
// refuse the same images the same way.
var (
	ErrUnsafeImage   = bundle.ErrUnsafeImage
	ErrImageTooLarge = bundle.ErrImageTooLarge
)

// Limits bound what flattening one image may read and keep in memory.
type Limits = bundle.Limits

// DefaultLimits fit an initramfs a worker can boot.
var DefaultLimits = bundle.DefaultLimits

// imageLimits are the limits imageFunction applies (tests lower them).
var imageLimits = DefaultLimits
