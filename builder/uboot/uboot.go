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
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/microfaas/microfaas/internal/command"

	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/progress"
	"github.com/microfaas/microfaas/kernel"
)

// Recipe names a U-Boot source: Debian's source package (upstream tarball,
// with Debian's patch series in the debian tarball).
type Recipe struct {
	Version string // Debian version of the source package
	Series  string // folder under patches/u-boot/
	Files   []SourceFile
	Hint    string
}

// SourceFile is one tarball of the recipe and what it must hash to.
type SourceFile struct {
	Name   string
	URL    string
	SHA256 string
	// Debian marks the debian/ tarball, whose patch series is applied.
	Debian bool
}

// Debian is bookworm's u-boot 2023.01+dfsg-2+deb12u3. The hashes are the
// Checksums-Sha256 of its .dsc (apt-cache showsrc u-boot).
var Debian = Recipe{
	Version: "2023.01+dfsg-2+deb12u3",
	Series:  "2023.01",
	Files: []SourceFile{
		{Name: "u-boot_2023.01+dfsg.orig.tar.xz",
			URL:    "http://deb.debian.org/debian/pool/main/u/u-boot/u-boot_2023.01+dfsg.orig.tar.xz",
			SHA256: "e75da6f089d063aaef39a1c17f1631791d87700662624e18de2121fa39a1ed44"},
		{Name: "u-boot_2023.01+dfsg-2+deb12u3.debian.tar.xz",
			URL:    "http://deb.debian.org/debian/pool/main/u/u-boot/u-boot_2023.01+dfsg-2+deb12u3.debian.tar.xz",
			SHA256: "f9d96a5095d542d8732eccdabcd1d1e7eaaa832311ce395f78b8ead1fad9845e", Debian: true},
	},
	Hint: "with a deb-src line for bookworm in /etc/apt/sources.list.d (make deps adds one), run " +
		"`apt-get source --download-only u-boot=2023.01+dfsg-2+deb12u3` in that folder, or pass the folder with --uboot-source",
}

// Board is what the build makes for a BeagleBone Black.
const (
	Defconfig      = "am335x_evm_defconfig" // covers the BeagleBone Black (its DT is in CONFIG_OF_LIST)
	CrossCompile   = "arm-linux-gnueabihf-"
	FalconFragment = "am335x-falcon.config" // under configs/u-boot/
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
	// SourceDir holds the recipe's files (e.g. from apt-get source
	// --download-only); empty means the cache's downloads folder.
	SourceDir string
	// ExtraFragments are applied after configs/u-boot/am335x-falcon.config (tests).
	ExtraFragments []string
}

// Manifest describes one build.
type Manifest struct {
	Kind      string            `json:"kind"`
	Key       string            `json:"key"`
	Version   string            `json:"version"`
	Inputs    map[string]string `json:"inputs"`
	Outputs   []kernel.FileInfo `json:"outputs"`
	BuildSecs float64           `json:"build_seconds"`
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
	srcs, err := Fetch(ctx, Debian, o.sourceDir())
	if err != nil {
		return Result{}, err
	}
	h := cache.NewHasher()
	h.Add("revision", revision)
	h.Add("version", Debian.Version)
	h.Add("defconfig", Defconfig)
	for _, f := range Debian.Files {
		h.Add("source:"+f.Name, f.SHA256)
	}
	fragPaths := append([]string{filepath.Join(o.RepoDir, "configs", "u-boot", FalconFragment)}, o.ExtraFragments...)
	var frags []kernel.NamedFragment
	var order []string
	for _, p := range fragPaths {
		b, err := os.ReadFile(p)
		if err != nil {
			return Result{}, fmt.Errorf("u-boot config fragment: %w", err)
		}
		f, err := kernel.ParseFragment(p, bytes.NewReader(b))
		if err != nil {
			return Result{}, err
		}
		frags = append(frags, kernel.NamedFragment{Name: filepath.Base(p), Fragment: f})
		h.Add("fragment:"+filepath.Base(p), cache.BytesSHA256(b))
		order = append(order, filepath.Base(p))
	}
	h.Add("fragment.order", strings.Join(order, ","))
	patches, err := kernel.SeriesPatches(filepath.Join(o.RepoDir, "patches", "u-boot", Debian.Series))
	if err != nil {
		return Result{}, err
	}
	var porder []string
	for _, p := range patches {
		sum, _, err := cache.FileSHA256(p)
		if err != nil {
			return Result{}, fmt.Errorf("u-boot patch: %w", err)
		}
		h.Add("patch:"+filepath.Base(p), sum)
		porder = append(porder, filepath.Base(p))
	}
	h.Add("patch.order", strings.Join(porder, ","))
	tc, err := toolchain()
	if err != nil {
		return Result{}, err
	}
	h.Add("toolchain", tc)
	key := h.Key()
	if r, ok := o.cached(key); ok {
		return r, nil
	}
	// One process builds a given key; the others wait and take its result.
	unlock, err := o.Cache.Lock("u-boot", key)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	if r, ok := o.cached(key); ok {
		return r, nil
	}
	var man Manifest
	dir, err := o.Cache.Fill("u-boot", key, func(out string) error {
		m, err := o.build(ctx, out, srcs, frags, patches)
		if err != nil {
			return err
		}
		m.Key, m.Inputs = key, h.Inputs()
		man = m
		return writeManifest(out, m)
	})
	if err != nil {
		return Result{}, err
	}
	return Result{Dir: dir, Manifest: man}, nil
}

func (o Options) sourceDir() string {
	if o.SourceDir != "" {
		return o.SourceDir
	}
	return filepath.Join(o.Cache.Dir, "downloads", "u-boot")
}

// Fetch finds each file of the recipe in dir (downloading it from the
// Debian archive if missing) and verifies its hash. It returns the paths.
func Fetch(ctx context.Context, r Recipe, dir string) (map[string]string, error) {
	paths := map[string]string{}
	for _, f := range r.Files {
		p := filepath.Join(dir, f.Name)
		if _, err := os.Stat(p); err != nil {
			if err := command.Download(ctx, f.URL, p); err != nil {
				// apt knows the mirrors and proxies of this machine.
				if aerr := aptSource(ctx, r, dir); aerr != nil {
					return nil, fmt.Errorf("u-boot source %s: %w; apt-get source: %v; %s", f.Name, err, aerr, r.Hint)
				}
			}
		}
		sum, _, err := cache.FileSHA256(p)
		if err != nil {
			return nil, fmt.Errorf("u-boot source: %w", err)
		}
		if sum != f.SHA256 {
			return nil, &kernel.ChecksumError{Path: p, Want: f.SHA256, Got: sum, Hint: r.Hint}
		}
		paths[f.Name] = p
	}
	return paths, nil
}

// aptSource fetches the recipe's files with apt-get source (needs a deb-src
// entry; make deps adds one).
func aptSource(ctx context.Context, r Recipe, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "apt-get", "source", "--download-only", "u-boot="+r.Version)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, command.LastLines(string(out), 3))
	}
	return nil
}

func toolchain() (string, error) {
	var parts []string
	for _, c := range [][]string{{CrossCompile + "gcc", "--version"}, {CrossCompile + "ld", "--version"}, {"make", "--version"}, {"gcc", "--version"}} {
		out, err := exec.Command(c[0], c[1:]...).Output()
		if err != nil {
			return "", fmt.Errorf("toolchain: %s not found (run make deps): %w", c[0], err)
		}
		first, _, _ := strings.Cut(string(out), "\n")
		parts = append(parts, first)
	}
	return strings.Join(parts, "; "), nil
}

// env makes the build reproducible: U-Boot takes its version date from
// SOURCE_DATE_EPOCH, and mkimage its header timestamps.
func env() []string {
	return []string{"SOURCE_DATE_EPOCH=0", "LC_ALL=C", "TZ=UTC", "KBUILD_BUILD_USER=microfaas", "KBUILD_BUILD_HOST=microfaas"}
}

func (o Options) build(ctx context.Context, out string, srcs map[string]string, frags []kernel.NamedFragment, patches []string) (Manifest, error) {
	start := time.Now()
	tree := filepath.Join(out, "src")
	defer os.RemoveAll(tree)
	if err := Prepare(ctx, tree, srcs, frags, patches); err != nil {
		return Manifest{}, err
	}
	step := progress.Start("build u-boot " + Debian.Version + " (MLO, u-boot.img)")
	logPath := filepath.Join(out, "build.log")
	err := command.RunLogged(ctx, tree, env(), logPath, "make", "-j"+strconv.Itoa(o.Jobs), "CROSS_COMPILE="+CrossCompile, "ARCH=arm", "all") // MLO and u-boot.img are part of all (arch/arm/mach-omap2/config.mk)
	step.Done(err)
	if err != nil {
		return Manifest{}, fmt.Errorf("u-boot build failed: %w (log: %s)", err, command.TailFile(logPath, 30))
	}
	os.Remove(logPath)
	m := Manifest{Kind: "u-boot", Version: Debian.Version}
	for _, oc := range []struct{ name, path string }{{MLO, "MLO"}, {UBoot, "u-boot.img"}, {Config, ".config"}} {
		dst := filepath.Join(out, oc.name)
		if err := cache.CopyFile(dst, filepath.Join(tree, oc.path), 0o644); err != nil {
			return Manifest{}, fmt.Errorf("u-boot output %s: %w", oc.name, err)
		}
		sum, size, err := cache.FileSHA256(dst)
		if err != nil {
			return Manifest{}, err
		}
		m.Outputs = append(m.Outputs, kernel.FileInfo{Name: oc.name, SHA256: sum, Size: size})
	}
	m.BuildSecs = time.Since(start).Seconds()
	return m, nil
}

func writeManifest(dir string, m Manifest) error {
	sort.Slice(m.Outputs, func(i, j int) bool { return m.Outputs[i].Name < m.Outputs[j].Name })
	return cache.WriteManifest(dir, m)
}

func readManifest(dir string) (Manifest, error) {
	var m Manifest
	return m, cache.ReadManifest(dir, &m)
}

// Prepare unpacks the source into tree, applies Debian's patch series and
// then ours, and configures the defconfig plus frags, checking that every
// fragment symbol survived.
func Prepare(ctx context.Context, tree string, srcs map[string]string, frags []kernel.NamedFragment, patches []string) error {
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return err
	}
	for _, f := range Debian.Files {
		step := progress.Start("unpack " + f.Name)
		var err error
		if f.Debian {
			err = command.Run(ctx, tree, env(), "tar", "-xf", srcs[f.Name], "--no-same-owner")
		} else {
			err = command.Run(ctx, tree, env(), "tar", "-xf", srcs[f.Name], "--strip-components=1", "--no-same-owner")
		}
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
	// Debian's series first (the source as Debian ships it), then ours.
	if err := kernel.ApplyPatches(tree, append(debianPatches, patches...)); err != nil {
		return fmt.Errorf("u-boot patches: %w", err)
	}
	arch := kernel.Arch{Name: "u-boot", KArch: "arm", CrossCompile: CrossCompile, Base: Defconfig}
	step := progress.Start("configure u-boot " + Defconfig + " + " + FalconFragment)
	err = kernel.Configure(ctx, tree, arch, frags)
	step.Done(err)
	if err != nil {
		return fmt.Errorf("u-boot config: %w", err)
	}
	return nil
}

func (o Options) cached(key string) (Result, bool) {
	if !o.Cache.Has("u-boot", key) {
		return Result{}, false
	}
	dir := o.Cache.Path("u-boot", key)
	m, err := readManifest(dir)
	if err != nil {
		return Result{}, false
	}
	o.Log.Info("u-boot cached", "key", key[:12], "dir", dir)
	return Result{Dir: dir, Manifest: m, Cached: true}, true
}
