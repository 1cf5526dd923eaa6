package kernel

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/command"
	"github.com/microfaas/microfaas/internal/progress"
)

// An ARM worker's initramfs is linked into the kernel, so every change to the
// worker binary would mean a new kernel. Instead of compiling the whole tree
// again (minutes), the build keeps one compiled tree per configuration in the
// cache ("kernel-tree") and relinks it with each initramfs (seconds): only
// usr/initramfs_data.o, vmlinux and the zImage are rebuilt. The relinked
// outputs are cached like any kernel, under a key that adds the initramfs's
// hash to the configuration's.
//
// This path is taken only when Options.Initramfs or Options.Derive is set
// (the ARM worker); the x86 kernel builds exactly as before, under the same
// cache key.

const (
	// treeRevision changes when the tree-and-relink procedure changes.
	treeRevision = "kernel-tree-1"
	// embeddedCPIO is where the tree's config points CONFIG_INITRAMFS_SOURCE,
	// relative to the tree (kbuild runs in it), so the tree can be relinked
	// with any archive copied there.
	embeddedCPIO = "mf-initramfs.cpio"
)

// Derivation makes one more output from a build's outputs, inside the cache
// entry before it is published (e.g. the legacy uImage from the zImage).
type Derivation struct {
	Name string // the output file it writes in the entry
	// Revision names the procedure: a new one gives a new cache key.
	Revision string
	Make     func(entryDir string) error
}

// initramfsFragment points the kernel at the archive a relink copies in.
func initramfsFragment() NamedFragment {
	return NamedFragment{Name: "(embedded initramfs)", Fragment: Fragment{
		"CONFIG_BLK_DEV_INITRD":   "y",
		"CONFIG_INITRAMFS_SOURCE": strconv.Quote(embeddedCPIO),
	}}
}

// buildEmbedded builds (or reuses) the compiled tree for the configuration,
// then relinks it with o.Initramfs and caches the outputs.
func (o Options) buildEmbedded(ctx context.Context, frags []NamedFragment, h *cache.Hasher) (Result, error) {
	frags = append(frags, initramfsFragment())
	h.Add("tree.revision", treeRevision)
	treeKey := h.Key()
	if o.Initramfs == "" {
		return Result{}, fmt.Errorf("kernel %s: no initramfs given: this kernel links its initramfs in (kernel.Options.Initramfs)", o.Arch.Name)
	}
	sum, _, err := cache.FileSHA256(o.Initramfs)
	if err != nil {
		return Result{}, fmt.Errorf("embedded initramfs: %w", err)
	}
	h.Add("initramfs.sha256", sum)
	for _, d := range o.Derive {
		h.Add("derive:"+d.Name, d.Revision)
	}
	key := h.Key()
	log := o.Log.With("arch", o.Arch.Name)
	if o.Cache.Has("kernel", key) { // the common case: no need to wait for the tree's lock
		dir := o.Cache.Path("kernel", key)
		if m, err := readManifest(dir); err == nil {
			log.Info("kernel cached", "key", key[:12], "dir", dir)
			return Result{Dir: dir, Manifest: m, Cached: true}, nil
		}
	}
	// One process at a time builds or relinks a tree: parallel test
	// packages ask for the same kernel.
	unlock, err := o.Cache.Lock("kernel-tree", treeKey)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	dir, m, cached, err := CachedBuild(o.Cache, "kernel", key, log, func(out string) (Manifest, error) {
		tree, version, treeSecs, err := o.compiledTree(ctx, treeKey, frags)
		if err != nil {
			return Manifest{}, err
		}
		start := time.Now()
		step := progress.Start(fmt.Sprintf("relink linux %s %s with the initramfs", version, o.Arch.Name))
		err = o.relink(ctx, tree, o.Initramfs, filepath.Join(out, "build.log"))
		step.Done(err)
		if err != nil {
			return Manifest{}, err
		}
		// No timings in the manifest: it is compared between builds.
		m := Manifest{Kind: "kernel", Arch: o.Arch.Name, Version: version}
		if _, err := CopyOutputs(out, tree, append(o.Arch.Outputs, Output{"config", ".config"})); err != nil {
			return Manifest{}, fmt.Errorf("kernel %w", err)
		}
		names := []string{}
		for _, oc := range o.Arch.Outputs {
			names = append(names, oc.Name)
		}
		for _, d := range o.Derive {
			if err := d.Make(out); err != nil {
				return Manifest{}, fmt.Errorf("kernel output %s: %w", d.Name, err)
			}
			names = append(names, d.Name)
		}
		for _, n := range append(names, "config") {
			s, size, err := cache.FileSHA256(filepath.Join(out, n))
			if err != nil {
				return Manifest{}, err
			}
			m.Outputs = append(m.Outputs, FileInfo{n, s, size})
		}
		m.Key, m.Inputs = key, withProvenance(h.Inputs(), o.Source.Provenance)
		m.Inputs["tree.key"] = treeKey
		log.Info("kernel relinked", "seconds", time.Since(start).Seconds(), "tree_build_seconds", treeSecs)
		return m, nil
	})
	if err != nil {
		return Result{}, err
	}
	return Result{Dir: dir, Manifest: m, Cached: cached}, nil
}

// relink links the compiled tree again with the archive cpio in place of
// the previous one: kbuild rebuilds usr/initramfs_data.o, vmlinux and the
// images, nothing else.
func (o Options) relink(ctx context.Context, tree, cpio, logPath string) error {
	if err := cache.CopyFile(filepath.Join(tree, embeddedCPIO), cpio, 0o644); err != nil {
		return fmt.Errorf("embedded initramfs: %w", err)
	}
	// make compares mtimes: the new archive must look newer than the
	// objects built from the previous one, even within a second.
	now := time.Now()
	if err := os.Chtimes(filepath.Join(tree, embeddedCPIO), now, now); err != nil {
		return err
	}
	err := command.RunLogged(ctx, tree, o.env(), logPath, "make", o.makeArgs(append([]string{"-j" + strconv.Itoa(o.Jobs)}, o.Arch.Targets...)...)...)
	if err != nil {
		return fmt.Errorf("kernel relink failed: %w (log: %s)", err, command.TailFile(logPath, 30))
	}
	os.Remove(logPath)
	return nil
}

// compiledTree returns the compiled kernel tree for treeKey, building it the
// first time. It is built in place (not in a temporary folder renamed
// afterwards) because make's dependency files hold paths into it. The caller
// holds the tree's lock.
func (o Options) compiledTree(ctx context.Context, treeKey string, frags []NamedFragment) (tree, version string, secs float64, err error) {
	root := o.Cache.Path("kernel-tree", treeKey)
	tree = filepath.Join(root, "src")
	if o.Cache.Has("kernel-tree", treeKey) {
		b, err := os.ReadFile(filepath.Join(root, "version"))
		if err == nil {
			s, _ := strconv.ParseFloat(strings.TrimSpace(readOr(filepath.Join(root, "build-seconds"), "0")), 64)
			o.Log.Info("kernel tree cached", "arch", o.Arch.Name, "key", treeKey[:12])
			return tree, strings.TrimSpace(string(b)), s, nil
		}
	}
	start := time.Now()
	os.RemoveAll(root) // an interrupted earlier attempt
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return "", "", 0, fmt.Errorf("kernel tree: %w", err)
	}
	fail := func(err error) (string, string, float64, error) {
		if !o.KeepTree {
			os.RemoveAll(root)
		}
		return "", "", 0, err
	}
	t, err := o.tree(frags)
	if err != nil {
		return fail(err)
	}
	if err := t.Prepare(ctx, tree); err != nil {
		return fail(err)
	}
	if version, err = treeVersion(tree); err != nil {
		return fail(err)
	}
	// The first build links an empty archive; every use relinks with its own.
	if err := writeEmptyCPIO(filepath.Join(tree, embeddedCPIO)); err != nil {
		return fail(err)
	}
	step := progress.Start(fmt.Sprintf("build linux %s %s (%s)", version, o.Arch.Name, strings.Join(o.Arch.Targets, " ")))
	logPath := filepath.Join(root, "build.log")
	err = command.RunLogged(ctx, tree, o.env(), logPath, "make", o.makeArgs(append([]string{"-j" + strconv.Itoa(o.Jobs)}, o.Arch.Targets...)...)...)
	step.Done(err)
	if err != nil {
		return fail(fmt.Errorf("kernel build failed: %w (log: %s)", err, command.TailFile(logPath, 30)))
	}
	os.Remove(logPath)
	secs = time.Since(start).Seconds()
	for name, v := range map[string]string{"version": version, "build-seconds": fmt.Sprintf("%.1f", secs), ".complete": ""} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(v), 0o644); err != nil {
			return fail(err)
		}
	}
	o.Log.Info("kernel tree built", "arch", o.Arch.Name, "seconds", secs)
	o.pruneTrees(treeKey)
	return tree, version, secs, nil
}

// keepTrees is how many compiled trees (about 1.5 GB each) the cache keeps.
const keepTrees = 2

// pruneTrees deletes all but the newest compiled trees, skipping any another
// process holds locked (it is building or relinking it).
func (o Options) pruneTrees(current string) {
	dir := filepath.Join(o.Cache.Dir, "kernel-tree")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type tree struct {
		key string
		mod time.Time
	}
	var trees []tree
	for _, e := range ents {
		if !e.IsDir() || e.Name() == current {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.Name(), ".complete"))
		if err != nil {
			continue // being built, or a failed build that cleans itself up
		}
		trees = append(trees, tree{e.Name(), fi.ModTime()})
	}
	sort.Slice(trees, func(i, j int) bool { return trees[i].mod.After(trees[j].mod) })
	for i, t := range trees {
		if i < keepTrees-1 {
			continue
		}
		lock := filepath.Join(dir, t.key+".lock")
		f, err := os.OpenFile(lock, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			os.RemoveAll(filepath.Join(dir, t.key))
			o.Log.Info("pruned old kernel tree", "key", t.key[:12])
			os.Remove(lock)
		}
		f.Close()
	}
}

func readOr(path, def string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return def
	}
	return string(b)
}

// writeEmptyCPIO writes a newc archive holding only its trailer.
func writeEmptyCPIO(path string) error {
	var b bytes.Buffer
	if err := cpio.WriteTrailer(cpio.Newc.Writer(&b)); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
