// Package uboot builds the BeagleBone Black's bootloader, MLO (U-Boot SPL)
// and u-boot.img, from a pinned U-Boot source with falcon mode enabled: SPL
// loads the worker's kernel and device tree straight from raw sectors and
// jumps to Linux, without U-Boot proper and without a saved environment.
// Typing 'c' on the serial console at power-on still starts U-Boot proper.
//
// The build is cached like the kernel: its key hashes the source tarballs,
// the defconfig, the fragments in configs/u-boot/, the patches in
// patches/u-boot/, and the toolchain. The image layout is read from the
// build's final .config (RawMode), never from a second copy of the numbers.
package uboot

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/command"
	"github.com/microfaas/microfaas/internal/progress"
	"github.com/microfaas/microfaas/internal/source"
	"github.com/microfaas/microfaas/kernel"
	"github.com/microfaas/microfaas/target"
)

// Recipe is a U-Boot series' data file, configs/u-boot/<series>/recipe.yaml:
// the pinned Debian source package, the defconfig and our fragments (beside
// it). Our patches live in patches/u-boot/<series>/.
type Recipe struct {
	Name      string     `yaml:"-"` // the folder: "2023.01"
	Path      string     `yaml:"-"`
	Series    string     `yaml:"series"`
	Defconfig string     `yaml:"defconfig"`
	Fragments []string   `yaml:"fragments"`
	Source    source.Pin `yaml:"source"`
}

// DefaultSeries is the U-Boot recipe mfbuild uses.
const DefaultSeries = "2023.01"

// LoadRecipe reads configs/u-boot/<series>/recipe.yaml.
func LoadRecipe(repo, series string) (Recipe, error) {
	path := filepath.Join(repo, "configs", "u-boot", series, "recipe.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		return Recipe{}, fmt.Errorf("u-boot recipe: %w", err)
	}
	var r Recipe
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&r); err != nil {
		return Recipe{}, fmt.Errorf("u-boot recipe %s: %w", path, err)
	}
	r.Name, r.Path = series, path
	if r.Series == "" || r.Defconfig == "" {
		return Recipe{}, fmt.Errorf("u-boot recipe %s: series and defconfig are required", path)
	}
	if err := r.Source.Validate(); err != nil {
		return Recipe{}, fmt.Errorf("u-boot recipe %s: %w", path, err)
	}
	if r.Source.DebianSource == nil {
		return Recipe{}, fmt.Errorf("u-boot recipe %s: the source is a debian_source package (its patch series is applied)", path)
	}
	return r, nil
}

// fragmentPaths are the recipe's fragments, beside the recipe file.
func (r Recipe) fragmentPaths() []string {
	var out []string
	for _, f := range r.Fragments {
		out = append(out, filepath.Join(filepath.Dir(r.Path), f))
	}
	return out
}

// board is the BeagleBone's target: U-Boot is built with its toolchain.
var board = target.ARMv7

// The board the build is for.
const (
	FalconFragment = "am335x-falcon.config" // in configs/u-boot/<series>/
	// revision changes when this package changes how it builds.
	revision = "uboot-build-1"
)

// Outputs of a build, in its cache entry.
const (
	MLO    = "MLO"        // SPL with the AM335x ROM's table of contents and GP header
	UBoot  = "u-boot.img" // U-Boot proper, for rescue and the fallback boot
	Config = "config"     // the final .config
)

// Options says what to build.
type Options struct {
	RepoDir string // configs/u-boot and patches/u-boot live there
	Cache   cache.Cache
	Jobs    int
	Log     *slog.Logger
	// Series names the recipe (configs/u-boot/<series>); default DefaultSeries.
	Series string
	// SourceDir holds the recipe's files (e.g. from apt-get source
	// --download-only), checked against the pins; empty means resolve them
	// into the cache (apt, with a fallback unless Locked).
	SourceDir string
	// Locked refuses anything but the exact pinned source version.
	Locked bool
	// ExtraFragments are applied after the recipe's fragments (tests).
	ExtraFragments []string
}

// Manifest describes one build.
type Manifest struct {
	Kind    string            `json:"kind"`
	Key     string            `json:"key"`
	Version string            `json:"version"`
	Inputs  map[string]string `json:"inputs"`
	Outputs []kernel.FileInfo `json:"outputs"`
	// BuildSecs is this process's build time; not written, so two builds'
	// manifests compare equal (make verify-reproducible), as the kernel's do.
	BuildSecs float64 `json:"-"`
}

// Result is a finished or cached build.
type Result struct {
	Dir      string
	Manifest Manifest
	Cached   bool
}

// Output is the path of a named output.
func (r Result) Output(name string) string { return filepath.Join(r.Dir, name) }

// Build fetches and verifies the source, configures am335x_evm_defconfig
// plus the falcon fragment, checks every fragment symbol survived, and
// builds MLO and u-boot.img, or returns the cached result.
func Build(ctx context.Context, o Options) (Result, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Jobs <= 0 {
		o.Jobs = runtime.NumCPU()
	}
	if o.Series == "" {
		o.Series = DefaultSeries
	}
	rec, err := LoadRecipe(o.RepoDir, o.Series)
	if err != nil {
		return Result{}, err
	}
	src, err := Fetch(ctx, rec, o)
	if err != nil {
		return Result{}, err
	}
	h := cache.NewHasher()
	h.Add("version", src.Version)
	h.Add("defconfig", rec.Defconfig)
	for name, p := range src.Files {
		sum, _, err := cache.FileSHA256(p)
		if err != nil {
			return Result{}, err
		}
		h.Add("source:"+name, sum)
	}
	patches, err := kernel.SeriesPatches(filepath.Join(o.RepoDir, "patches", "u-boot", rec.Series))
	if err != nil {
		return Result{}, err
	}
	in := kernel.Inputs{Revision: revision, Kind: "u-boot", Frags: append(rec.fragmentPaths(), o.ExtraFragments...), Patches: patches,
		Tools: []string{board.CrossCompile + "gcc", board.CrossCompile + "ld", "make", "gcc"}}
	frags, err := in.Hash(h)
	if err != nil {
		return Result{}, err
	}
	key := h.Key()
	dir, m, cached, err := kernel.CachedBuild(o.Cache, "u-boot", key, o.Log, func(out string) (Manifest, error) {
		m, err := o.build(ctx, out, rec, src, frags, patches)
		if err != nil {
			return Manifest{}, err
		}
		m.Key, m.Inputs = key, h.Inputs()
		for k, v := range src.Provenance {
			m.Inputs[k] = v
		}
		sort.Slice(m.Outputs, func(i, j int) bool { return m.Outputs[i].Name < m.Outputs[j].Name })
		return m, nil
	})
	if err != nil {
		return Result{}, err
	}
	return Result{Dir: dir, Manifest: m, Cached: cached}, nil
}

// Fetch returns the recipe's verified source files: from o.SourceDir when
// given (checked against the pins), else resolved into the cache.
func Fetch(ctx context.Context, r Recipe, o Options) (source.Resolved, error) {
	d := r.Source.DebianSource
	if o.SourceDir == "" {
		return source.Resolve(ctx, r.Source, source.Options{CacheDir: o.Cache.Dir, Locked: o.Locked, Recipe: r.Path, Log: o.Log})
	}
	files := map[string]string{}
	for _, f := range d.Files {
		p := filepath.Join(o.SourceDir, f.Name)
		sum, _, err := cache.FileSHA256(p)
		if err != nil {
			return source.Resolved{}, fmt.Errorf("u-boot source: %w; the folder must hold the files %s pins", err, r.Path)
		}
		if sum != f.SHA256 {
			return source.Resolved{}, &source.ChecksumError{Path: p, Want: f.SHA256, Got: sum, Hint: "fetch it again with apt-get source --download-only " + d.Package + "=" + d.Version}
		}
		files[f.Name] = p
	}
	return source.Resolved{Files: files, Version: d.Version,
		Provenance: map[string]string{"source.kind": "debian_source", "source.package": d.Package, "source.version": d.Version, "source.dir": o.SourceDir}}, nil
}

// env makes the build reproducible: U-Boot takes its version date from
// SOURCE_DATE_EPOCH, and mkimage its header timestamps.
func env() []string {
	return []string{"SOURCE_DATE_EPOCH=0", "LC_ALL=C", "TZ=UTC", "KBUILD_BUILD_USER=microfaas", "KBUILD_BUILD_HOST=microfaas"}
}

func (o Options) build(ctx context.Context, out string, rec Recipe, src source.Resolved, frags []kernel.NamedFragment, patches []string) (Manifest, error) {
	start := time.Now()
	tree := filepath.Join(out, "src")
	defer os.RemoveAll(tree)
	if err := Prepare(ctx, tree, rec.Defconfig, src.Files, frags, patches); err != nil {
		return Manifest{}, err
	}
	step := progress.Start("build u-boot " + src.Version + " (MLO, u-boot.img)")
	logPath := filepath.Join(out, "build.log")
	err := command.RunLogged(ctx, tree, env(), logPath, "make", "-j"+strconv.Itoa(o.Jobs), "CROSS_COMPILE="+board.CrossCompile, "ARCH="+board.KernelARCH, "all") // MLO and u-boot.img are part of all (arch/arm/mach-omap2/config.mk)
	step.Done(err)
	if err != nil {
		return Manifest{}, fmt.Errorf("u-boot build failed: %w (log: %s)", err, command.TailFile(logPath, 30))
	}
	os.Remove(logPath)
	m := Manifest{Kind: "u-boot", Version: src.Version}
	if m.Outputs, err = kernel.CopyOutputs(out, tree, []kernel.Output{{Name: MLO, Path: "MLO"}, {Name: UBoot, Path: "u-boot.img"}, {Name: Config, Path: ".config"}}); err != nil {
		return Manifest{}, fmt.Errorf("u-boot %w", err)
	}
	m.BuildSecs = time.Since(start).Seconds()
	return m, nil
}

// Prepare unpacks the source (the .orig tarball, then the .debian one) into
// tree with Debian's patch series applied (the source as Debian ships it),
// applies ours, and configures the defconfig plus frags, checking that every
// fragment symbol survived.
func Prepare(ctx context.Context, tree, defconfig string, srcs map[string]string, frags []kernel.NamedFragment, patches []string) error {
	t := kernel.Tree{
		Unpack:  func(ctx context.Context, tree string) error { return unpackDebian(ctx, tree, srcs) },
		Patches: patches,
		Arch:    kernel.Arch{Name: "u-boot", KArch: board.KernelARCH, CrossCompile: board.CrossCompile, Base: defconfig},
		Frags:   frags,
	}
	if err := t.Prepare(ctx, tree); err != nil {
		return fmt.Errorf("u-boot: %w", err)
	}
	return nil
}

// unpackDebian unpacks a Debian source package's .orig and .debian tarballs
// and applies the debian/patches series.
func unpackDebian(ctx context.Context, tree string, srcs map[string]string) error {
	var names []string
	for name := range srcs {
		names = append(names, name)
	}
	// .orig first: the debian/ folder goes on top of the upstream tree.
	sort.Slice(names, func(i, j int) bool {
		return strings.Contains(names[i], ".orig.") && !strings.Contains(names[j], ".orig.")
	})
	if len(names) != 2 || !strings.Contains(names[0], ".orig.") || !strings.Contains(names[1], ".debian.") {
		return fmt.Errorf("u-boot source: want one .orig and one .debian tarball, got %v", names)
	}
	for _, name := range names {
		step := progress.Start("unpack " + name)
		args := []string{"-xf", srcs[name], "--no-same-owner"}
		if strings.Contains(name, ".orig.") {
			args = append(args, "--strip-components=1")
		}
		err := command.Run(ctx, tree, env(), "tar", args...)
		step.Done(err)
		if err != nil {
			return fmt.Errorf("unpack u-boot source: %w", err)
		}
	}
	series, err := os.ReadFile(filepath.Join(tree, "debian", "patches", "series"))
	if err != nil {
		return fmt.Errorf("u-boot debian patch series: %w", err)
	}
	var debianPatches []string
	for _, line := range strings.Split(string(series), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, " ")
		debianPatches = append(debianPatches, filepath.Join(tree, "debian", "patches", name))
	}
	if err := kernel.ApplyPatches(tree, debianPatches); err != nil {
		return fmt.Errorf("u-boot debian patches: %w", err)
	}
	return nil
}
