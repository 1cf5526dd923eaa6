package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/command"
	"github.com/microfaas/microfaas/internal/progress"
)

// Reproducible build identity. Fixed so two builds of the same inputs give
// the same bytes (the kernel embeds these in its version string).
const (
	BuildTimestamp  = "Thu Jan  1 00:00:00 UTC 1970"
	BuildUser       = "microfaas"
	BuildHost       = "microfaas"
	SourceDateEpoch = "0"
	// recipeRevision changes when this package changes how it builds, so
	// old cache entries are not reused for a different procedure.
	recipeRevision = "kernel-build-1"
)

// Options says what to build.
type Options struct {
	Arch    Arch
	Source  Source
	RepoDir string // repository root: configs/kernel and patches/ live there
	Cache   cache.Cache
	Jobs    int
	Log     *slog.Logger
	// Extra fragments (file paths) applied after the arch's, e.g. for tests.
	ExtraFragments []string
	// Keep the build tree (for debugging) instead of deleting it.
	KeepTree bool
	// Initramfs, if set, is a cpio archive linked into the kernel (the ARM
	// worker: falcon mode loads one image). Its hash joins the cache key; see
	// embed.go for how the compiled tree is kept and relinked.
	Initramfs string
	// Derive makes more outputs from the built ones (with Initramfs only).
	Derive []Derivation
}

// Manifest describes one build: its inputs, their hashes, and its outputs.
type Manifest struct {
	Kind      string            `json:"kind"`
	Key       string            `json:"key"`
	Arch      string            `json:"arch"`
	Version   string            `json:"version"`
	Inputs    map[string]string `json:"inputs"`
	Outputs   []FileInfo        `json:"outputs"`
	BuildSecs float64           `json:"build_seconds,omitempty"`
}

// FileInfo is an output's name, hash and size.
type FileInfo struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Result is a finished (or cached) build.
type Result struct {
	Dir      string // cache entry holding the outputs and manifest.json
	Manifest Manifest
	Cached   bool
}

// Output returns the path of a named output.
func (r Result) Output(name string) string { return filepath.Join(r.Dir, name) }

// Build configures and compiles the kernel, or returns the cached result for
// the same inputs.
func Build(ctx context.Context, o Options) (Result, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Jobs <= 0 {
		o.Jobs = runtime.NumCPU()
	}
	frags, h, err := o.inputs()
	if err != nil {
		return Result{}, err
	}
	if o.Initramfs != "" || len(o.Derive) > 0 {
		return o.buildEmbedded(ctx, frags, h)
	}
	key := h.Key()
	dir, m, cached, err := CachedBuild(o.Cache, "kernel", key, o.Log.With("arch", o.Arch.Name), func(out string) (Manifest, error) {
		m, err := o.build(ctx, out, frags)
		if err != nil {
			return Manifest{}, err
		}
		m.Key, m.Inputs = key, withProvenance(h.Inputs(), o.Source.Provenance)
		return m, nil
	})
	if err != nil {
		return Result{}, err
	}
	return Result{Dir: dir, Manifest: m, Cached: cached}, nil
}

// inputs reads the fragments and patches and hashes every input of the build.
func (o Options) inputs() ([]NamedFragment, *cache.Hasher, error) {
	h := cache.NewHasher()
	h.Add("arch", o.Arch.Name)
	h.Add("base", o.Arch.Base)
	h.Add("targets", strings.Join(o.Arch.Targets, " "))
	h.Add("source.sha256", o.Source.SHA256)
	paths := make([]string, 0, len(o.Arch.Fragments)+len(o.ExtraFragments))
	for _, f := range o.Arch.Fragments {
		paths = append(paths, filepath.Join(o.RepoDir, "configs", "kernel", f))
	}
	paths = append(paths, o.ExtraFragments...)
	patches, err := SeriesPatches(PatchDir(o.RepoDir, o.Source.Series))
	if err != nil {
		return nil, nil, err
	}
	in := Inputs{Revision: recipeRevision, Kind: "kernel", Frags: paths, Patches: patches,
		Tools: []string{o.Arch.CrossCompile + "gcc", o.Arch.CrossCompile + "ld", "make"}}
	frags, err := in.Hash(h)
	if err != nil {
		return nil, nil, err
	}
	// Symbols this series lacks leave the fragments (Configure checks that
	// the tree really lacks every declared one). Only those this build's
	// fragments name are inputs: the ARM build is not changed by an x86
	// symbol's declaration.
	if abs := named(frags, o.Source.Absent); len(abs) > 0 {
		h.Add("absent", strings.Join(abs, ","))
		frags = withoutAbsent(frags, abs)
	}
	return frags, h, nil
}

// tree says how to prepare this build's source tree.
func (o Options) tree(frags []NamedFragment) (Tree, error) {
	patches, err := SeriesPatches(PatchDir(o.RepoDir, o.Source.Series))
	if err != nil {
		return Tree{}, err
	}
	return Tree{
		Unpack: func(ctx context.Context, tree string) error {
			step := progress.Start("unpack " + filepath.Base(o.Source.Path))
			err := Unpack(ctx, o.Source.Path, tree)
			step.Done(err)
			if err != nil {
				return fmt.Errorf("unpack kernel source: %w", err)
			}
			return nil
		},
		Patches: patches, Arch: o.Arch, Frags: frags, Absent: o.Source.Absent,
	}, nil
}

// treeVersion reads the kernel version from a tree's Makefile.
func treeVersion(tree string) (string, error) {
	mk, err := os.Open(filepath.Join(tree, "Makefile"))
	if err != nil {
		return "", fmt.Errorf("kernel source has no Makefile: %w", err)
	}
	defer mk.Close()
	return MakefileVersion(mk)
}

func (o Options) build(ctx context.Context, out string, frags []NamedFragment) (Manifest, error) {
	tree := filepath.Join(out, "src")
	defer func() {
		if !o.KeepTree {
			os.RemoveAll(tree)
		}
	}()
	t, err := o.tree(frags)
	if err != nil {
		return Manifest{}, err
	}
	if err := t.Prepare(ctx, tree); err != nil {
		return Manifest{}, err
	}
	version, err := treeVersion(tree)
	if err != nil {
		return Manifest{}, err
	}
	step := progress.Start(fmt.Sprintf("build linux %s %s (%s)", version, o.Arch.Name, strings.Join(o.Arch.Targets, " ")))
	logPath := filepath.Join(out, "build.log")
	err = command.RunLogged(ctx, tree, o.env(), logPath, "make", o.makeArgs(append([]string{"-j" + strconv.Itoa(o.Jobs)}, o.Arch.Targets...)...)...)
	step.Done(err)
	if err != nil {
		return Manifest{}, fmt.Errorf("kernel build failed: %w (log: %s)", err, command.TailFile(logPath, 30))
	}
	m := Manifest{Kind: "kernel", Arch: o.Arch.Name, Version: version}
	if m.Outputs, err = CopyOutputs(out, tree, append(o.Arch.Outputs, Output{"config", ".config"})); err != nil {
		return Manifest{}, fmt.Errorf("kernel %w", err)
	}
	os.Remove(logPath)
	return m, nil
}

// Unpack extracts a kernel tarball into tree, dropping its top folder.
func Unpack(ctx context.Context, tarball, tree string) error {
	return command.Run(ctx, "", nil, "tar", "-xf", tarball, "-C", tree, "--strip-components=1", "--no-same-owner")
}

// Configure writes the kernel tree's .config: the arch's base config, the
// fragments merged on top in order, then olddefconfig. It fails if the final
// config lost any value a fragment asked for, or if a symbol the recipe
// declares absent exists in the tree.
func Configure(ctx context.Context, tree string, arch Arch, frags []NamedFragment, absent []string) error {
	if err := CheckAbsent(tree, absent); err != nil {
		return err
	}
	env := reproducibleEnv()
	if err := command.Run(ctx, tree, env, "make", makeArgs(arch, arch.Base)...); err != nil {
		return fmt.Errorf("make %s: %w", arch.Base, err)
	}
	cfgPath := filepath.Join(tree, ".config")
	base, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	merged := string(base)
	for _, f := range frags {
		merged = Merge(merged, f.Fragment)
	}
	if err := os.WriteFile(cfgPath, []byte(merged), 0o644); err != nil {
		return err
	}
	if err := command.Run(ctx, tree, env, "make", makeArgs(arch, "olddefconfig")...); err != nil {
		return fmt.Errorf("make olddefconfig: %w", err)
	}
	final, err := ReadConfig(cfgPath)
	if err != nil {
		return err
	}
	return Check(final, frags)
}

func (o Options) makeArgs(targets ...string) []string { return makeArgs(o.Arch, targets...) }

func makeArgs(arch Arch, targets ...string) []string {
	args := []string{"ARCH=" + arch.KArch}
	if arch.CrossCompile != "" {
		args = append(args, "CROSS_COMPILE="+arch.CrossCompile)
	}
	return append(args, targets...)
}

func (o Options) env() []string { return reproducibleEnv() }

// reproducibleEnv is the fixed build environment that makes the output
// reproducible.
func reproducibleEnv() []string {
	return []string{
		"KBUILD_BUILD_TIMESTAMP=" + BuildTimestamp,
		"KBUILD_BUILD_USER=" + BuildUser,
		"KBUILD_BUILD_HOST=" + BuildHost,
		"KBUILD_BUILD_VERSION=1",
		"SOURCE_DATE_EPOCH=" + SourceDateEpoch,
		"LC_ALL=C",
		"TZ=UTC",
	}
}

func readManifest(dir string) (Manifest, error) {
	var m Manifest
	return m, cache.ReadManifest(dir, &m)
}

// withProvenance adds where the source came from to a manifest's inputs
// (not to the cache key: the tarball's hash already is).
func withProvenance(inputs, prov map[string]string) map[string]string {
	for k, v := range prov {
		inputs[k] = v
	}
	return inputs
}
