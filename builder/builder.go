// Package builder is mfbuild's pipeline: it turns the repository's configs
// and patches into what a worker boots (kernel and initramfs, and for
// BeagleBone workers the bootloader and disk images), each step cached by a
// hash of its inputs.
package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/microfaas/microfaas/initramfs"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/progress"
	"github.com/microfaas/microfaas/kernel"
	"github.com/microfaas/microfaas/runtime/functions"
	"github.com/microfaas/microfaas/target"
)

// Options are the inputs shared by every build step.
type Options struct {
	RepoDir string         // repository root (configs/, patches/, cmd/mfinit)
	Cache   cache.Cache    // where outputs are kept
	Arch    *target.Target // nil: target.X86
	// Version names a kernel recipe; Source overrides it with a local tarball.
	Version string
	Source  string
	// SourceSHA256, if set, is checked against Source.
	SourceSHA256 string
	// Locked builds only the exact pinned source versions (release
	// builds): a pin gone from the archive is an error, not a fallback.
	Locked bool
	// KernelFragments are extra kconfig fragments (paths) for the kernel,
	// e.g. configs/kernel/test-gpio-sim.config for the GPIO test kernel.
	KernelFragments []string
	// KernelBase, if set, replaces the base configuration the fragments are
	// applied to (tinyconfig), e.g. x86_64_defconfig for the cold-start
	// benchmark's baseline kernel (the original's method).
	KernelBase string
	Jobs       int
	// Functions are user functions to put in the initramfs: name -> executable.
	Functions map[string]string
	// Builtins selects the built-in functions the worker carries: "all"
	// (or empty), "compute" (no service clients) or comma-separated names;
	// the clients nothing selected needs are left out (functions.BuildTags).
	Builtins string
	// Compress is the initramfs's compression when it is a separate file
	// (x86): "" or "none", or "gzip" (the kernel unpacks it; smaller, but
	// costs boot time under TCG: docs/performance.md). A linked initramfs
	// (ARM) is inside the compressed kernel image and takes none.
	Compress string
	Log      *slog.Logger
	// Debug adds a console shell and diagnostic tools to the initramfs
	// (debug.go); never listening on the network.
	Debug bool
	// initrd is an already written initramfs to link into the ARM kernel.
	initrd string
}

// BootFiles are what mfbuild makes of a worker: the kernel and the
// initramfs it boots, with their build records. (A worker of the cluster
// file is cluster.Worker; the running worker program is runtime.Worker.)
type BootFiles struct {
	Kernel string // the target's KernelImage
	// VMLinux is the uncompressed kernel beside it (targets with
	// KernelELF): the QEMU power controller boots it directly (PVH).
	VMLinux    string
	Initramfs  string
	KernelInfo kernel.Result
	InitInfo   InitramfsInfo
}

// ErrNoRepo means mfbuild was run outside the MicroFaaS repository.
var ErrNoRepo = errors.New("not inside the MicroFaaS repository: run mfbuild from its checkout or pass --repo")

// FindRepo walks up from dir to the repository root (the folder holding
// configs/kernel and cmd/mfinit).
func FindRepo(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if fi, err := os.Stat(filepath.Join(d, "configs", "kernel")); err == nil && fi.IsDir() {
			if _, err := os.Stat(filepath.Join(d, "cmd", "mfinit")); err == nil {
				return d, nil
			}
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", ErrNoRepo
		}
		d = parent
	}
}

// kernelArch is the kernel package's build description of a target: the
// one place a target is mapped to a kernel build.
func kernelArch(t *target.Target) (kernel.Arch, error) {
	return kernel.ArchFor(t), nil
}

func (o *Options) defaults() {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Version == "" {
		o.Version = kernel.DefaultVersion
	}
	if o.Arch == nil {
		o.Arch = target.X86
	}
}

// Kernel builds (or finds in the cache) the worker kernel.
func Kernel(ctx context.Context, o Options) (kernel.Result, error) {
	o.defaults()
	arch, err := kernelArch(o.Arch)
	if err != nil {
		return kernel.Result{}, err
	}
	if o.KernelBase != "" {
		if err := kernel.ValidBase(o.KernelBase); err != nil {
			return kernel.Result{}, err
		}
		arch.Base = o.KernelBase
	}
	src, err := KernelSource(ctx, o)
	if err != nil {
		return kernel.Result{}, err
	}
	ko := kernel.Options{Arch: arch, Source: src, RepoDir: o.RepoDir, Cache: o.Cache, Jobs: o.Jobs, Log: o.Log,
		ExtraFragments: o.KernelFragments}
	if o.Arch.InitramfsLinked { // see arm.go
		cleanup, err := armKernelOptions(ctx, o, &ko, o.initrd)
		defer cleanup()
		if err != nil {
			return kernel.Result{}, err
		}
	}
	return kernel.Build(ctx, ko)
}

// KernelSource resolves the kernel source: a --source tarball, else the
// recipe's pin (fetched and verified into the cache).
func KernelSource(ctx context.Context, o Options) (kernel.Source, error) {
	o.defaults()
	if o.Source != "" {
		src, err := kernel.LocalSource(o.Source, o.SourceSHA256)
		if err != nil {
			return kernel.Source{}, err
		}
		// A recipe of the same series still says what the series lacks.
		if rs, err := kernel.LoadRecipes(o.RepoDir); err == nil {
			for _, r := range rs {
				if r.Series == src.Series {
					src.Absent = r.Absent
				}
			}
		}
		return src, nil
	}
	r, err := kernel.Lookup(o.RepoDir, o.Version)
	if err != nil {
		return kernel.Source{}, err
	}
	return kernel.Fetch(ctx, r, kernel.FetchOptions{Cache: o.Cache, Locked: o.Locked, Log: o.Log})
}

// InitramfsInfo describes a written initramfs.
type InitramfsInfo struct {
	Path    string            `json:"path"`
	SHA256  string            `json:"sha256"`
	Size    int64             `json:"size"`
	Init    kernel.FileInfo   `json:"init"`
	Entries int               `json:"entries"`
	Inputs  map[string]string `json:"inputs"`
}

// Initramfs compiles mfinit for the arch and writes the worker's initramfs
// to out (and out + ".json", its manifest).
func Initramfs(ctx context.Context, o Options, out string) (InitramfsInfo, error) {
	o.defaults()
	goarch, goarm := o.Arch.GOARCH, o.Arch.GOARM
	if err := checkCompress(o); err != nil {
		return InitramfsInfo{}, err
	}
	tags, err := functions.BuildTags(o.Builtins, functions.Names())
	if err != nil {
		return InitramfsInfo{}, err
	}
	tmp, err := os.MkdirTemp("", "mfbuild-init-")
	if err != nil {
		return InitramfsInfo{}, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "mfinit")
	step := progress.Start("build mfinit for " + goarch)
	err = initramfs.GoBuild(ctx, o.RepoDir, "./cmd/mfinit", o.Arch, bin, tags...)
	step.Done(err)
	if err != nil {
		return InitramfsInfo{}, err
	}
	initSum, initSize, err := cache.FileSHA256(bin)
	if err != nil {
		return InitramfsInfo{}, err
	}
	opts := []initramfs.Option{
		initramfs.WithInit(bin),
		initramfs.WithDir("etc", filepath.Join(o.RepoDir, "configs", "initramfs", "etc")),
	}
	inputs := map[string]string{"init": initSum}
	if len(tags) > 0 {
		inputs["tags"] = strings.Join(tags, ",")
	}
	if o.Compress == CompressGzip {
		inputs["compress"] = o.Compress
	}
	if o.Debug {
		dopts, dinputs, err := debugInitramfs(ctx, o, goarch, goarm)
		if err != nil {
			return InitramfsInfo{}, err
		}
		opts = append(opts, dopts...)
		for k, v := range dinputs {
			inputs[k] = v
		}
	}
	names := make([]string, 0, len(o.Functions))
	for n := range o.Functions {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if strings.ContainsAny(n, "/ ") || n == "" {
			return InitramfsInfo{}, fmt.Errorf("function name %q: use letters, digits, - and _", n)
		}
		fopts, sum, err := functionOptions(ctx, o.Arch, n, o.Functions[n])
		if err != nil {
			return InitramfsInfo{}, err
		}
		inputs["function:"+n] = sum
		opts = append(opts, fopts...)
	}
	a, err := initramfs.New(opts...)
	if err != nil {
		return InitramfsInfo{}, err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return InitramfsInfo{}, err
	}
	f, err := os.Create(out + ".tmp")
	if err != nil {
		return InitramfsInfo{}, err
	}
	if err := writeArchive(f, a, o.Compress); err != nil {
		f.Close()
		return InitramfsInfo{}, err
	}
	if err := f.Close(); err != nil {
		return InitramfsInfo{}, err
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		return InitramfsInfo{}, err
	}
	sum, size, err := cache.FileSHA256(out)
	if err != nil {
		return InitramfsInfo{}, err
	}
	info := InitramfsInfo{Path: out, SHA256: sum, Size: size, Init: kernel.FileInfo{Name: "init", SHA256: initSum, Size: initSize},
		Entries: len(a.Names()), Inputs: inputs}
	b, _ := json.MarshalIndent(info, "", "  ")
	return info, os.WriteFile(out+".json", append(b, '\n'), 0o644)
}

// BuildWorker builds the kernel and the initramfs into outDir.
func BuildWorker(ctx context.Context, o Options, outDir string) (BootFiles, error) {
	o.defaults()
	if o.Arch.InitramfsLinked {
		return buildLinkedWorker(ctx, o, outDir)
	}
	k, err := Kernel(ctx, o)
	if err != nil {
		return BootFiles{}, err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return BootFiles{}, err
	}
	name := k.Manifest.Outputs[0].Name
	kpath := filepath.Join(outDir, name)
	if err := cache.CopyFile(kpath, k.Output(name), 0o644); err != nil {
		return BootFiles{}, fmt.Errorf("copy kernel: %w", err)
	}
	if err := cache.CopyFile(filepath.Join(outDir, "kernel-manifest.json"), filepath.Join(k.Dir, "manifest.json"), 0o644); err != nil {
		return BootFiles{}, err
	}
	vmlinux, err := copyVMLinux(k, outDir)
	if err != nil {
		return BootFiles{}, err
	}
	info, err := Initramfs(ctx, o, filepath.Join(outDir, "initramfs.cpio"))
	if err != nil {
		return BootFiles{}, err
	}
	return BootFiles{Kernel: kpath, VMLinux: vmlinux, Initramfs: info.Path, KernelInfo: k, InitInfo: info}, nil
}

// VMLinux is the name of the uncompressed kernel in a worker folder.
const VMLinux = "vmlinux"

// copyVMLinux puts the kernel's uncompressed vmlinux (if the build has one)
// beside the kernel image, where the QEMU power controller looks for it
// (power.BootKernel). A stale one from an older build is removed, so the
// folder never pairs a new bzImage with an old vmlinux.
func copyVMLinux(k kernel.Result, outDir string) (string, error) {
	dst := filepath.Join(outDir, VMLinux)
	for _, f := range k.Manifest.Outputs {
		if f.Name == VMLinux {
			if err := cache.CopyFile(dst, k.Output(f.Name), 0o644); err != nil {
				return "", fmt.Errorf("copy vmlinux: %w", err)
			}
			return dst, nil
		}
	}
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	return "", nil
}
