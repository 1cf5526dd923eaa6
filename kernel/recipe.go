// Package kernel builds a worker's Linux kernel: it fetches and verifies the
// source named by a recipe, applies the series' patches exactly, configures
// it from a base config plus the fragments in configs/kernel/, checks the
// result, and builds it reproducibly, caching the output by a hash of every
// input.
package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/microfaas/microfaas/internal/source"
	"github.com/microfaas/microfaas/target"
)

// Recipe is one kernel series' data file, configs/kernel/<series>/recipe.yaml:
// the pinned source and what the series lacks. Its patches live in
// patches/linux/<series>/, its fragments are the shared ones in configs/kernel/.
type Recipe struct {
	// Name is the recipe's folder (what --version names): "6.1", "5.10".
	Name string `yaml:"-"`
	// Path is the recipe file, named in notices and errors.
	Path string `yaml:"-"`
	// Series names the patch folder (patches/linux/<series>); the kernel
	// version of the source must belong to it.
	Series string `yaml:"series"`
	// Version is the kernel version the pinned source holds (checked
	// against its Makefile); a fallback source may hold a later one.
	Version string `yaml:"version"`
	// Built says whether this machine's tests build the recipe; an unbuilt
	// recipe (its source needs the internet) is documented as such.
	Built bool `yaml:"built"`
	// Source is the pinned source (Debian package or upstream tarball).
	Source source.Pin `yaml:"source"`
	// Absent lists symbols of the shared fragments that do not exist in this
	// series: they are left out of its config, and the check verifies they
	// are indeed absent, instead of failing as dropped.
	Absent []string `yaml:"absent"`
}

// DefaultVersion is the recipe used when none is named.
const DefaultVersion = "6.1"

// ErrNoRecipe means --version names no recipe folder.
var ErrNoRecipe = errors.New("no such kernel recipe")

// RecipeDir is where the kernel recipes live in the repository.
func RecipeDir(repo string) string { return filepath.Join(repo, "configs", "kernel") }

// LoadRecipes reads every configs/kernel/*/recipe.yaml, sorted by name.
func LoadRecipes(repo string) ([]Recipe, error) {
	paths, err := filepath.Glob(filepath.Join(RecipeDir(repo), "*", "recipe.yaml"))
	if err != nil {
		return nil, err
	}
	var out []Recipe
	for _, p := range paths {
		r, err := ReadRecipe(p)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ReadRecipe reads and checks one recipe file.
func ReadRecipe(path string) (Recipe, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Recipe{}, fmt.Errorf("kernel recipe: %w", err)
	}
	var r Recipe
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&r); err != nil {
		return Recipe{}, fmt.Errorf("kernel recipe %s: %w", path, err)
	}
	r.Name, r.Path = filepath.Base(filepath.Dir(path)), path
	if r.Series == "" || r.Version == "" {
		return Recipe{}, fmt.Errorf("kernel recipe %s: series and version are required", path)
	}
	if SeriesOf(r.Version) != r.Series {
		return Recipe{}, fmt.Errorf("kernel recipe %s: version %s is not of series %s", path, r.Version, r.Series)
	}
	if err := r.Source.Validate(); err != nil {
		return Recipe{}, fmt.Errorf("kernel recipe %s: %w", path, err)
	}
	if r.Source.DebianSource != nil {
		return Recipe{}, fmt.Errorf("kernel recipe %s: a kernel source is a debian package or an upstream tarball, not debian_source", path)
	}
	for _, s := range r.Absent {
		if !strings.HasPrefix(s, "CONFIG_") {
			return Recipe{}, fmt.Errorf("kernel recipe %s: absent symbol %q must start with CONFIG_", path, s)
		}
	}
	return r, nil
}

// Lookup returns the recipe a --version names: its folder ("5.10") or its
// exact version ("5.11.22").
func Lookup(repo, version string) (Recipe, error) {
	rs, err := LoadRecipes(repo)
	if err != nil {
		return Recipe{}, err
	}
	var names []string
	for _, r := range rs {
		if r.Name == version || r.Version == version {
			return r, nil
		}
		names = append(names, r.Name)
	}
	return Recipe{}, fmt.Errorf("%w %q in %s (known: %s); add a folder with a recipe.yaml there, or pass a tarball with --source",
		ErrNoRecipe, version, RecipeDir(repo), strings.Join(names, ", "))
}

// SeriesOf returns the patch series of a kernel version: its major.minor.
func SeriesOf(version string) string {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return version
	}
	return parts[0] + "." + parts[1]
}

// PatchDir is a series' patch folder: patches/linux/<series>.
func PatchDir(repo, series string) string { return filepath.Join(repo, "patches", "linux", series) }

// Arch describes how a kernel is built for one target.
type Arch struct {
	Name         string   // the target's name (target.Target.Name): part of the cache key
	KArch        string   // the kernel's ARCH=
	CrossCompile string   // CROSS_COMPILE= prefix
	Base         string   // base config target
	Fragments    []string // files under configs/kernel/, applied in order
	Targets      []string // make targets
	Outputs      []Output // files copied out of the tree
}

// Output is one build product.
type Output struct {
	Name string // name in the output directory
	Path string // path in the kernel tree
}

// ArchFor is the kernel build of a target (target/): base tinyconfig, the
// common fragment then the target's, its boot image, its device trees and,
// where it boots directly, the uncompressed vmlinux.
func ArchFor(t *target.Target) Arch {
	boot := "arch/" + t.KernelARCH + "/boot/"
	a := Arch{Name: t.Name, KArch: t.KernelARCH, CrossCompile: t.CrossCompile, Base: "tinyconfig",
		Fragments: []string{"common.config", t.KernelFragment},
		Targets:   []string{t.KernelImage},
		Outputs:   []Output{{t.KernelImage, boot + t.KernelImage}},
	}
	if t.KernelELF {
		// vmlinux carries the PVH entry note, which QEMU can boot directly
		// (no real-mode setup, no decompression).
		a.Outputs = append(a.Outputs, Output{"vmlinux", "vmlinux"})
	}
	for _, dtb := range t.KernelDTBs {
		a.Targets = append(a.Targets, dtb)
		a.Outputs = append(a.Outputs, Output{dtb, boot + "dts/" + dtb})
	}
	return a
}

// ErrBase means a base configuration is not a make target mfbuild accepts.
var ErrBase = errors.New("unknown kernel base configuration")

// ValidBase checks a base configuration target: tinyconfig, allnoconfig,
// defconfig or an ARCH's NAME_defconfig (a make target of the kernel tree).
func ValidBase(b string) error {
	switch {
	case b == "tinyconfig", b == "allnoconfig", b == "defconfig":
		return nil
	case strings.HasSuffix(b, "_defconfig") && len(b) > len("_defconfig") && !strings.ContainsAny(b, "/ .=\t\n"):
		return nil
	}
	return fmt.Errorf("%w %q: want tinyconfig, allnoconfig, defconfig or a NAME_defconfig (e.g. x86_64_defconfig)", ErrBase, b)
}

// BoneBlackDTB is the BeagleBone Black's device tree, built with the ARM kernel.
const BoneBlackDTB = "am335x-boneblack.dtb"
