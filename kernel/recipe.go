// Package kernel builds a worker's Linux kernel: it fetches and verifies the
// source named by a recipe, applies the series' patches exactly, configures
// it from a base config plus the fragments in configs/kernel/, checks the
// result, and builds it reproducibly, caching the output by a hash of every
// input.
package kernel

import (
	"fmt"
	"sort"
	"strings"
)

// Recipe names one kernel source: where it comes from and what it must hash to.
type Recipe struct {
	// Version is the kernel version the source holds (from its Makefile).
	Version string
	// Series names the folder of patches under patches/ ("6.1", "5.11").
	Series string
	// URL is where to download the tarball; empty when only Local works.
	URL string
	// Local is a path tried before downloading (a distribution package).
	Local string
	// SHA256 is the tarball's expected hash.
	SHA256 string
	// Hint tells the user how to get the source.
	Hint string
}

// Recipes are the kernels mfbuild knows, by the name given to --version.
var Recipes = map[string]Recipe{
	// The original MicroFaaS kernel.
	"5.11.22": {
		Version: "5.11.22",
		Series:  "5.11",
		URL:     "https://cdn.kernel.org/pub/linux/kernel/v5.x/linux-5.11.22.tar.xz",
		SHA256:  "11027c6114eb916edbcc37897226fb6263b2931911d2d5093550473ce1a57600",
		Hint:    "download it from kernel.org, or pass a local copy with --source",
	},
	// 6.1 LTS as Debian ships it (linux-source-6.1 6.1.192-2): works offline.
	"6.1": {
		Version: "6.1.192",
		Series:  "6.1",
		Local:   "/usr/src/linux-source-6.1.tar.xz",
		SHA256:  "4d415b3d364834fd818270e88813e90323bbfce4f519a0e6bd4940ddcd7df693",
		Hint: "install Debian's linux-source-6.1 package (make deps does); if Debian has updated it, " +
			"build it with --source /usr/src/linux-source-6.1.tar.xz or update the pinned hash in kernel/recipe.go",
	},
}

// DefaultVersion is the recipe used when none is named.
const DefaultVersion = "6.1"

// RecipeNames lists the known recipes, sorted.
func RecipeNames() []string {
	n := make([]string, 0, len(Recipes))
	for k := range Recipes {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Lookup returns the recipe for a version name.
func Lookup(version string) (Recipe, error) {
	r, ok := Recipes[version]
	if !ok {
		return Recipe{}, fmt.Errorf("no kernel recipe for %q (known: %s); pass a tarball with --source to build another version",
			version, strings.Join(RecipeNames(), ", "))
	}
	return r, nil
}

// SeriesOf returns the patch series of a kernel version: its major.minor.
func SeriesOf(version string) string {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return version
	}
	return parts[0] + "." + parts[1]
}

// Arch describes how a kernel is built for one target.
type Arch struct {
	Name         string   // "x86" or "arm"
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

// Arches are the targets mfbuild builds for.
var Arches = map[string]Arch{
	"x86": {
		Name: "x86", KArch: "x86", Base: "tinyconfig",
		Fragments: []string{"common.config", "x86_64-microvm.config"},
		Targets:   []string{"bzImage"},
		Outputs:   []Output{{"bzImage", "arch/x86/boot/bzImage"}},
	},
	// One ARMv7 kernel for the BeagleBone Black and QEMU virt (see
	// configs/kernel/armv7.config). Its initramfs is linked in (Options.Initramfs):
	// U-Boot SPL's falcon mode loads a single image.
	"arm": {
		Name: "arm", KArch: "arm", CrossCompile: "arm-linux-gnueabihf-", Base: "tinyconfig",
		Fragments: []string{"common.config", "armv7.config"},
		Targets:   []string{"zImage", BoneBlackDTB},
		Outputs: []Output{
			{"zImage", "arch/arm/boot/zImage"},
			{BoneBlackDTB, "arch/arm/boot/dts/" + BoneBlackDTB},
		},
	},
}

// BoneBlackDTB is the BeagleBone Black's device tree, built with the ARM kernel.
const BoneBlackDTB = "am335x-boneblack.dtb"

// LookupArch returns the build description of an architecture.
func LookupArch(name string) (Arch, error) {
	a, ok := Arches[name]
	if !ok {
		known := make([]string, 0, len(Arches))
		for k := range Arches {
			known = append(known, k)
		}
		sort.Strings(known)
		return Arch{}, fmt.Errorf("unknown architecture %q (known: %s)", name, strings.Join(known, ", "))
	}
	return a, nil
}
