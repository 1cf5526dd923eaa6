package kernel

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/progress"
)

// The recipe engine: what every kconfig-based build shares (the kernel, the
// relinked ARM kernel and U-Boot). A build hashes its inputs (Inputs.Hash),
// prepares a tree (Prepare: unpack, patch exactly, configure and check),
// runs make, copies its outputs (CopyOutputs) and publishes them in the
// cache under one process per key (CachedBuild).

// Inputs are the hashed inputs of a kconfig-based build beyond its source.
type Inputs struct {
	Revision string   // the procedure's revision: a new one gives new keys
	Kind     string   // names the fragments in errors ("kernel", "u-boot")
	Frags    []string // fragment files, applied in order
	Patches  []string // patch files, applied in order
	// Tools identify the toolchain: the first line of each's --version.
	Tools []string
}

// Hash reads the fragments and adds every input to h: the revision, each
// fragment and patch by name (content hash and order), and the toolchain.
func (in Inputs) Hash(h *cache.Hasher) ([]NamedFragment, error) {
	h.Add("revision", in.Revision)
	var frags []NamedFragment
	var order []string
	for _, p := range in.Frags {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("%s config fragment: %w", in.Kind, err)
		}
		f, err := ParseFragment(p, bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		frags = append(frags, NamedFragment{Name: filepath.Base(p), Fragment: f})
		h.Add("fragment:"+filepath.Base(p), cache.BytesSHA256(b))
		order = append(order, filepath.Base(p))
	}
	h.Add("fragment.order", strings.Join(order, ","))
	var porder []string
	for _, p := range in.Patches {
		sum, _, err := cache.FileSHA256(p)
		if err != nil {
			return nil, fmt.Errorf("%s patch: %w", in.Kind, err)
		}
		h.Add("patch:"+filepath.Base(p), sum)
		porder = append(porder, filepath.Base(p))
	}
	h.Add("patch.order", strings.Join(porder, ","))
	tc, err := Toolchain(in.Tools...)
	if err != nil {
		return nil, err
	}
	h.Add("toolchain", tc)
	return frags, nil
}

// Toolchain identifies the tools of a build: a new compiler means a new build.
func Toolchain(tools ...string) (string, error) {
	var parts []string
	for _, t := range tools {
		out, err := exec.Command(t, "--version").Output()
		if err != nil {
			return "", fmt.Errorf("toolchain: %s not found (run make deps): %w", t, err)
		}
		first, _, _ := strings.Cut(string(out), "\n")
		parts = append(parts, first)
	}
	return strings.Join(parts, "; "), nil
}

// Tree says how to prepare a source tree for a build.
type Tree struct {
	// Unpack fills the empty tree folder with the source.
	Unpack func(ctx context.Context, tree string) error
	// Patches are applied after Unpack, in order, exactly.
	Patches []string
	Arch    Arch // base config, ARCH= and CROSS_COMPILE=
	Frags   []NamedFragment
	Absent  []string
}

// Prepare unpacks, patches and configures a tree, checking the config.
func (t Tree) Prepare(ctx context.Context, tree string) error {
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return err
	}
	if err := t.Unpack(ctx, tree); err != nil {
		return err
	}
	if err := ApplyPatches(tree, t.Patches); err != nil {
		return err
	}
	step := progress.Start("configure " + t.Arch.Base + " + fragments")
	err := Configure(ctx, tree, t.Arch, t.Frags, t.Absent)
	step.Done(err)
	return err
}

// CopyOutputs copies outputs from tree into dir and lists them with their
// hashes and sizes.
func CopyOutputs(dir, tree string, outs []Output) ([]FileInfo, error) {
	var infos []FileInfo
	for _, oc := range outs {
		dst := filepath.Join(dir, oc.Name)
		if err := cache.CopyFile(dst, filepath.Join(tree, oc.Path), 0o644); err != nil {
			return nil, fmt.Errorf("output %s: %w", oc.Name, err)
		}
		sum, size, err := cache.FileSHA256(dst)
		if err != nil {
			return nil, err
		}
		infos = append(infos, FileInfo{oc.Name, sum, size})
	}
	return infos, nil
}

// CachedBuild returns the cache entry kind/key with its manifest, or builds
// it: one process per key builds (a file lock), the others wait and take
// its result. fill writes the outputs into a fresh folder and returns the
// manifest, which is written beside them before the entry is published.
func CachedBuild[M any](c cache.Cache, kind, key string, log *slog.Logger, fill func(dir string) (M, error)) (string, M, bool, error) {
	var zero M
	cached := func() (string, M, bool) {
		if !c.Has(kind, key) {
			return "", zero, false
		}
		dir := c.Path(kind, key)
		var m M
		if err := cache.ReadManifest(dir, &m); err != nil {
			return "", zero, false
		}
		log.Info(kind+" cached", "key", key[:12], "dir", dir)
		return dir, m, true
	}
	if dir, m, ok := cached(); ok {
		return dir, m, true, nil
	}
	unlock, err := c.Lock(kind, key)
	if err != nil {
		return "", zero, false, err
	}
	defer unlock()
	if dir, m, ok := cached(); ok {
		return dir, m, true, nil
	}
	var man M
	dir, err := c.Fill(kind, key, func(out string) error {
		m, err := fill(out)
		if err != nil {
			return err
		}
		man = m
		return cache.WriteManifest(out, m)
	})
	if err != nil {
		return "", zero, false, err
	}
	return dir, man, false, nil
}
