package runtime

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microfaas/microfaas/bundle"
	"github.com/microfaas/microfaas/protocol"
)

// A function deployed at run time reaches a worker as a bundle (package
// bundle): one file named by its SHA-256, which the job names. A QEMU
// worker finds it in its initramfs (DeliveredBundlesDir), a board in its
// cache if it has one; otherwise the worker fetches it over the session.
// However it came, its bytes are hashed and compared with the job's digest
// before it is unpacked, and nothing runs from a bundle that did not match.

// DeliveredBundlesDir is where a worker's initramfs carries bundles, one
// file each, named sha256-<hex>.
const DeliveredBundlesDir = "/run/bundles"

// DefaultBundleWorkDir is where bundles are fetched and unpacked, one
// directory per digest (<hex>/config.json, <hex>/rootfs): a tmpfs.
const DefaultBundleWorkDir = "/run/functions-rt"

// bundleFilePrefix names a bundle file: sha256-<64 hex digits>.
const bundleFilePrefix = "sha256-"

// ErrBundleTooLarge means a job's bundle is larger than this worker can
// hold: it is refused before a byte is fetched.
var ErrBundleTooLarge = fmt.Errorf("bundle larger than this worker can hold: %w", bundle.ErrImageTooLarge)

// Bundles finds, checks and unpacks the bundles of run-time deployed
// functions on a worker. Its zero value fetches everything and unpacks
// into DefaultBundleWorkDir. It is used by one session at a time.
type Bundles struct {
	// Delivered are the bundle files of the initramfs, by digest, opened
	// (and unlinked) by TakeBundles before /run's tmpfs hid them.
	Delivered map[string]*os.File
	// CacheDir, if set, keeps fetched bundles on a board's storage as
	// sha256-<hex>, hashed again on every use.
	CacheDir string
	// WorkDir is where bundles are fetched and unpacked (default
	// DefaultBundleWorkDir); it should be a tmpfs.
	WorkDir string
	// MaxSize is the largest bundle taken (0: a quarter of the machine's
	// memory: the file and its unpacked copy both live in memory).
	MaxSize int64
	Log     *slog.Logger

	ready map[string]bundle.Config // unpacked under WorkDir/<hex>, from verified bytes
	// unpackTook is how long the last unpack took (the rest of preparing
	// a bundle is hashing it, or fetching and hashing it): logged.
	unpackTook time.Duration
	// early is closed when the delivered bundles, checked and unpacked
	// in the background (CheckDelivered), are ready; nil: not started.
	early chan struct{}
}

// CheckDelivered checks and unpacks the delivered bundles in the
// background, so the work overlaps the boot's waits (the link, the
// connection): the hello waits for it. Call it once /run has its tmpfs.
func (b *Bundles) CheckDelivered() {
	if len(b.Delivered) == 0 || b.early != nil {
		return
	}
	b.early = make(chan struct{})
	go func() {
		defer close(b.early)
		b.checkDelivered()
	}()
}

// waitDelivered waits for CheckDelivered's work, if it was started.
func (b *Bundles) waitDelivered() {
	if b.early != nil {
		<-b.early
	}
}

// checkDelivered checks and unpacks every delivered bundle (a worker gets
// the one of the function it is powered on for): its job follows.
func (b *Bundles) checkDelivered() {
	for digest, f := range b.Delivered {
		delete(b.Delivered, digest)
		start := time.Now()
		_, err := b.unpackFile(digest, f, "initramfs")
		f.Close() // unlinked: its memory is freed
		if err != nil {
			b.log().Error("bundle delivered with the initramfs refused", "digest", digest, "err", err)
			continue
		}
		b.logReady(digest, "initramfs", start)
	}
}

// logReady logs a bundle made ready: from where, and how long it took.
func (b *Bundles) logReady(digest, from string, start time.Time) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.log().Info("bundle checked and unpacked", "digest", digest, "from", from,
		"ms", ms(time.Since(start)), "unpack_ms", ms(b.unpackTook))
}

// Fetch copies the bundle ref from the orchestrator into w (the session's
// bundle_request and bundle_chunk frames).
type Fetch func(ref protocol.BundleRef, w io.Writer) error

// ErrBadDigest means a digest is not "sha256:" and 64 lowercase hex digits.
var ErrBadDigest = errors.New(`bundle digest is not "sha256:" and 64 lowercase hex digits`)

// digestHex checks a digest and returns its hex part.
func digestHex(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(h) != 64 || strings.ToLower(h) != h {
		return "", fmt.Errorf("%w: %q", ErrBadDigest, digest)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("%w: %q", ErrBadDigest, digest)
	}
	return h, nil
}

// TakeBundles opens the bundle files in dir (sha256-<hex>) and unlinks
// them: the open files keep them for the worker alone, after /run gets its
// tmpfs. A missing dir is no bundles. Files of other names are left.
func TakeBundles(dir string) (map[string]*os.File, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bundles in %s: %w", dir, err)
	}
	files := map[string]*os.File{}
	for _, e := range ents {
		h, ok := strings.CutPrefix(e.Name(), bundleFilePrefix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		digest := "sha256:" + h
		if _, err := digestHex(digest); err != nil {
			continue
		}
		p := filepath.Join(dir, e.Name())
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return files, fmt.Errorf("bundle %s: %w", p, err)
		}
		if err := os.Remove(p); err != nil {
			f.Close()
			return files, fmt.Errorf("bundle %s: unlink after opening: %w", p, err)
		}
		files[digest] = f
	}
	return files, nil
}

func (b *Bundles) log() *slog.Logger {
	if b.Log == nil {
		return slog.Default()
	}
	return b.Log
}

func (b *Bundles) workDir() string {
	if b.WorkDir == "" {
		return DefaultBundleWorkDir
	}
	return b.WorkDir
}

func (b *Bundles) maxSize() int64 {
	if b.MaxSize > 0 {
		return b.MaxSize
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil || si.Totalram == 0 {
		return 128 << 20 // a quarter of a BeagleBone's
	}
	return int64(uint64(si.Totalram) * uint64(si.Unit) / 4)
}

// Held lists the digests of the bundles this worker holds, verified, for
// its hello. A delivered bundle is checked and unpacked here, if
// CheckDelivered has not done it (its job follows); a cache file is hashed
// (and removed if it does not match).
func (b *Bundles) Held() []string {
	b.waitDelivered()
	b.checkDelivered()
	var held []string
	for digest := range b.ready {
		held = append(held, digest)
	}
	if b.CacheDir != "" {
		ents, _ := os.ReadDir(b.CacheDir)
		for _, e := range ents {
			h, ok := strings.CutPrefix(e.Name(), bundleFilePrefix)
			digest := "sha256:" + h
			if _, err := digestHex(digest); !ok || err != nil {
				continue
			}
			if _, ok := b.ready[digest]; ok {
				continue
			}
			if err := b.verifyCached(digest); err != nil {
				b.log().Warn("cached bundle refused", "digest", digest, "err", err)
				continue
			}
			held = append(held, digest)
		}
	}
	sort.Strings(held)
	return held
}

// cachePath is the cache file of a digest.
func (b *Bundles) cachePath(h string) string { return filepath.Join(b.CacheDir, bundleFilePrefix+h) }

// verifyCached hashes the cache file of digest, removing it if it does
// not match.
func (b *Bundles) verifyCached(digest string) error {
	h, err := digestHex(digest)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(b.cachePath(h), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := bundle.Verify(f, digest); err != nil {
		os.Remove(b.cachePath(h))
		return err
	}
	return nil
}

// Prepare returns the directory of ref's bundle unpacked (config.json,
// rootfs/) and its config, from bytes that hashed to ref.Digest: unpacked
// already, or from the initramfs, the cache, or else fetched. A local copy
// that does not match is removed and the bundle fetched. Only one bundle
// is kept unpacked: preparing another removes it (memory is scarce).
func (b *Bundles) Prepare(ref protocol.BundleRef, fetch Fetch) (string, bundle.Config, error) {
	h, err := digestHex(ref.Digest)
	if err != nil {
		return "", bundle.Config{}, err
	}
	b.waitDelivered()
	dir := filepath.Join(b.workDir(), h)
	if cfg, ok := b.ready[ref.Digest]; ok {
		return dir, cfg, nil
	}
	start := time.Now()
	done := func(from string) { b.logReady(ref.Digest, from, start) }
	if f, ok := b.Delivered[ref.Digest]; ok {
		delete(b.Delivered, ref.Digest)
		cfg, err := b.unpackFile(ref.Digest, f, "initramfs")
		f.Close()
		if err == nil {
			done("initramfs")
			return dir, cfg, nil
		}
		b.log().Warn("bundle delivered with the initramfs refused; fetching it", "digest", ref.Digest, "err", err)
	}
	if b.CacheDir != "" {
		if f, err := os.OpenFile(b.cachePath(h), os.O_RDONLY|unix.O_NOFOLLOW, 0); err == nil {
			cfg, err := b.unpackFile(ref.Digest, f, "cache")
			f.Close()
			if err == nil {
				done("cache")
				return dir, cfg, nil
			}
			b.log().Warn("cached bundle refused; fetching it", "digest", ref.Digest, "err", err)
			if errors.Is(err, bundle.ErrDigestMismatch) {
				os.Remove(b.cachePath(h))
			}
		}
	}
	if ref.Size <= 0 {
		return "", bundle.Config{}, fmt.Errorf("bundle %s: size %d: the orchestrator must name the bundle's size", ref.Digest, ref.Size)
	}
	if max := b.maxSize(); ref.Size > max {
		return "", bundle.Config{}, fmt.Errorf("bundle %s is %d bytes, this worker holds at most %d (a quarter of its memory): deploy a smaller image, or run the function on workers with more memory: %w",
			ref.Digest, ref.Size, max, ErrBundleTooLarge)
	}
	if fetch == nil {
		return "", bundle.Config{}, fmt.Errorf("bundle %s is not on this worker and it has no session to fetch it over", ref.Digest)
	}
	cfg, err := b.fetch(ref, h, fetch)
	if err != nil {
		return "", bundle.Config{}, err
	}
	done("orchestrator")
	return dir, cfg, nil
}

// fetch fetches ref into a file in the work directory, hashing it as it
// comes; unpacks it if it matches; keeps it in the cache if there is one.
func (b *Bundles) fetch(ref protocol.BundleRef, h string, fetch Fetch) (bundle.Config, error) {
	if err := os.MkdirAll(b.workDir(), 0o700); err != nil {
		return bundle.Config{}, fmt.Errorf("bundle work directory: %w", err)
	}
	p := filepath.Join(b.workDir(), ".fetch-"+h)
	os.Remove(p)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return bundle.Config{}, fmt.Errorf("bundle %s: %w", ref.Digest, err)
	}
	defer os.Remove(p)
	defer f.Close()
	sum := sha256.New()
	n := &countWriter{w: io.MultiWriter(f, sum)}
	if err := fetch(ref, n); err != nil {
		return bundle.Config{}, err
	}
	if n.n != ref.Size {
		return bundle.Config{}, fmt.Errorf("bundle %s: fetched %d bytes, the job names %d", ref.Digest, n.n, ref.Size)
	}
	if got := "sha256:" + hex.EncodeToString(sum.Sum(nil)); got != ref.Digest {
		return bundle.Config{}, fmt.Errorf("%w: the bundle fetched from the orchestrator hashes to %s, not %s: it was not run",
			bundle.ErrDigestMismatch, got, ref.Digest)
	}
	cfg, err := b.unpackVerified(ref.Digest, h, f)
	if err != nil {
		return bundle.Config{}, err
	}
	if b.CacheDir != "" {
		if err := b.keep(h, f); err != nil {
			b.log().Warn("could not keep the bundle in the cache", "digest", ref.Digest, "dir", b.CacheDir, "err", err)
		}
	}
	return cfg, nil
}

// keep copies a verified bundle file into the cache (a temporary name,
// then renamed: a cut power leaves no half file under a digest's name).
func (b *Bundles) keep(h string, f *os.File) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	tmp := filepath.Join(b.CacheDir, ".tmp-"+h)
	os.Remove(tmp)
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, f)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, b.cachePath(h))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// unpackFile hashes a local bundle file against digest, then unpacks it.
// from names where it came from, for errors.
func (b *Bundles) unpackFile(digest string, f *os.File, from string) (bundle.Config, error) {
	h, err := digestHex(digest)
	if err != nil {
		return bundle.Config{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return bundle.Config{}, err
	}
	if err := bundle.Verify(f, digest); err != nil {
		return bundle.Config{}, fmt.Errorf("bundle from the %s: %w", from, err)
	}
	return b.unpackVerified(digest, h, f)
}

// unpackVerified unpacks f, whose bytes hashed to digest, into
// WorkDir/<hex>, removing any other unpacked bundle first.
func (b *Bundles) unpackVerified(digest, h string, f *os.File) (bundle.Config, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return bundle.Config{}, err
	}
	for d := range b.ready {
		if old, err := digestHex(d); err == nil {
			os.RemoveAll(filepath.Join(b.workDir(), old))
		}
		delete(b.ready, d)
	}
	if err := os.MkdirAll(b.workDir(), 0o700); err != nil {
		return bundle.Config{}, fmt.Errorf("bundle work directory: %w", err)
	}
	dir := filepath.Join(b.workDir(), h)
	if err := os.RemoveAll(dir); err != nil {
		return bundle.Config{}, fmt.Errorf("bundle %s: clear %s: %w", digest, dir, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return bundle.Config{}, fmt.Errorf("bundle %s: %w", digest, err)
	}
	start := time.Now()
	// Buffered: a header is a few small reads, each a system call (dear
	// under TCG).
	cfg, err := bundle.Unpack(bufio.NewReaderSize(f, 256<<10), dir, bundle.DefaultLimits)
	b.unpackTook = time.Since(start)
	if err != nil {
		os.RemoveAll(dir)
		return bundle.Config{}, fmt.Errorf("bundle %s: %w", digest, err)
	}
	if b.ready == nil {
		b.ready = map[string]bundle.Config{}
	}
	b.ready[digest] = cfg
	return cfg, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
