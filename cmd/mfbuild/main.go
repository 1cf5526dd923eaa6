// Command mfbuild builds everything a MicroFaaS worker boots.
//
//	mfbuild kernel    --arch x86 [--version 6.1 | --source TARBALL]
//	mfbuild initramfs --arch x86 --out FILE [--function name=path ...]
//	mfbuild worker    --arch x86 --out DIR      (kernel + initramfs)
//	mfbuild qemu      --arch x86|arm            (boot it and run a job: the smoke test)
//	mfbuild uboot                               (MLO and u-boot.img for the BeagleBone, falcon mode)
//	mfbuild image     sdcard|emmc|flasher --cluster FILE --worker ID|--all --out PATH
//
// Every step is cached under $XDG_CACHE_HOME/microfaas (or --cache).
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/cli"
	"github.com/microfaas/microfaas/kernel"
	"github.com/microfaas/microfaas/target"
)

var commands = []cli.Command{
	{Name: "kernel", Summary: "fetch, verify, patch, configure and build the worker kernel", Run: runKernel},
	{Name: "initramfs", Summary: "build mfinit and write the worker initramfs", Run: runInitramfs},
	{Name: "worker", Summary: "build kernel and initramfs into one folder", Run: runWorker},
	{Name: "qemu", Summary: "boot the built worker in QEMU and run a job through the orchestrator", Run: runQEMU},
	{Name: "uboot", Summary: "build the BeagleBone bootloader (MLO, u-boot.img) with falcon mode", Run: runUBoot},
	{Name: "image", Summary: "write a BeagleBone worker's SD-card, eMMC or flasher image", Run: runImage},
}

func main() { cli.Main("mfbuild", commands) }

// common holds the flags every build command takes.
type common struct {
	arch                                 *target.Target
	version, source, sha, cacheDir, repo string
	jobs                                 int
	verbose, locked                      bool
	functions                            funcFlags
	builtins, compress                   string
}

// register adds every common flag: the base ones, --arch and the kernel's.
func (c *common) register(fs *flag.FlagSet) {
	c.registerBase(fs)
	fs.Var(target.Flag{T: &c.arch}, "arch", "worker architecture: "+target.Names())
	c.registerKernel(fs)
}

// registerBase adds the flags every build step reads (cache, repository,
// jobs, logs, --locked); mfbuild uboot takes only these.
func (c *common) registerBase(fs *flag.FlagSet) {
	c.arch = target.X86
	fs.BoolVar(&c.locked, "locked", false, "build only the exact pinned source versions (release builds): a pin gone from the archive is an error, not a fallback")
	fs.StringVar(&c.cacheDir, "cache", cache.DefaultDir(), "cache directory (outside the repository)")
	fs.StringVar(&c.repo, "repo", ".", "MicroFaaS repository (configs/, patches/, cmd/mfinit)")
	fs.IntVar(&c.jobs, "j", 0, "parallel make jobs (default: number of CPUs)")
	fs.BoolVar(&c.verbose, "v", false, "verbose logs")
}

// registerKernel adds the flags that choose the kernel source.
func (c *common) registerKernel(fs *flag.FlagSet) {
	fs.StringVar(&c.version, "version", kernel.DefaultVersion, "kernel recipe: a series folder of configs/kernel/ (6.1, 5.10, 5.11) or its exact version")
	fs.StringVar(&c.source, "source", "", "build from this kernel tarball instead of the recipe's (version read from its Makefile)")
	fs.StringVar(&c.sha, "sha256", "", "with --source: the tarball's expected SHA-256")
}

func (c *common) options() (builder.Options, error) {
	repo, err := builder.FindRepo(c.repo)
	if err != nil {
		return builder.Options{}, err
	}
	level := slog.LevelWarn
	if c.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	return builder.Options{RepoDir: repo, Cache: cache.Cache{Dir: c.cacheDir}, Arch: c.arch,
		Version: c.version, Source: c.source, SourceSHA256: c.sha, Locked: c.locked, Jobs: c.jobs,
		Functions: c.functions.m, Builtins: c.builtins, Compress: c.compress, Log: log}, nil
}

// funcFlags collects repeated --function name=path flags.
type funcFlags struct{ m map[string]string }

func (f *funcFlags) String() string { return "" }
func (f *funcFlags) Set(v string) error {
	name, path, ok := strings.Cut(v, "=")
	if !ok || name == "" || path == "" {
		return fmt.Errorf("want name=path, got %q", v)
	}
	if f.m == nil {
		f.m = map[string]string{}
	}
	if _, dup := f.m[name]; dup {
		return fmt.Errorf("function %q given twice", name)
	}
	f.m[name] = path
	return nil
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return nil
}
