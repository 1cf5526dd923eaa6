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
// bundle): one archive named by its SHA-256, which the job names. A QEMU
// worker powered on for the function finds it unpacked by its kernel from
// the initramfs (DeliveredBundlesDir/<hex>), a board in its cache if it
// has one; otherwise the worker fetches it over the session. However it
// came, it is hashed and compared with the job's digest before anything of
// it runs: a file's bytes before it is unpacked, a delivered tree as Encode
// would write it (bundle.DigestTree).

// DeliveredBundlesDir is where a worker's kernel unpacks the bundles its
// initramfs carries, one directory each, named by the hex of the digest
// (orchestrator/power.BundlePath).
const DeliveredBundlesDir = "/bundles"

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
	// Delivered are the bundle trees the kernel unpacked from the
	// initramfs (TakeBundles): directory by digest, not yet checked.
	// CheckDelivered takes them over (and sets it nil).
	Delivered map[string]string
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

	ready map[string]readyBundle // verified: unpacked from verified bytes, or a delivered tree that hashed right
	// unpackTook is how long the last unpack took (the rest of preparing
	// a bundle is hashing it, or fetching and hashing it): logged.
	unpackTook time.Duration
	// early is closed when the delivered bundles, checked in the
	// background (CheckDelivered), are in ready or removed; nil: not
	// started. Until then only that goroutine touches ready.
	early chan struct{}
	// checking are the digests CheckDelivered is checking.
	checking []string
	waited   bool // a job waited for the check (logged once)
	// digestTree is bundle.DigestTree (tests hold it back).
	digestTree func(dir string, lim bundle.Limits) (string, bundle.Config, error)
}

// readyBundle is a verified bundle's directory (config.json, rootfs/) and
// its config.
type readyBundle struct {
	dir string
	cfg bundle.Config
}

// CheckDelivered checks the delivered bundles in the background, so that
// hashing them overlaps the boot's waits (the link, the connection and
// the handshake's round trips): the hello lists them without waiting, and
// a job waits for the check before anything runs (one that failed is
// fetched).
func (b *Bundles) CheckDelivered() {
	if b.early != nil || len(b.Delivered) == 0 {
		return
	}
	trees := b.Delivered
	b.Delivered = nil
	for digest := range trees {
		b.checking = append(b.checking, digest)
	}
	b.early = make(chan struct{})
	go func() {
		defer close(b.early)
		b.checkDelivered(trees)
	}()
}

// waitDelivered waits for CheckDelivered's work, if it was started.
func (b *Bundles) waitDelivered() {
	if b.early != nil {
		<-b.early
	}
}

// checkDelivered hashes every delivered tree (a worker gets the one of
// the function it is powered on for) as bundle.Encode would write it; one
// that does not hash to its name is removed.
func (b *Bundles) checkDelivered(trees map[string]string) {
	for digest, dir := range trees {
		start := time.Now()
		digestTree := b.digestTree
		if digestTree == nil {
			digestTree = bundle.DigestTree
		}
		hashed, cfg, err := digestTree(dir, bundle.DefaultLimits)
		if err == nil && hashed != digest {
			err = fmt.Errorf("%w: the tree hashes to %s", bundle.ErrDigestMismatch, hashed)
		}
		if err != nil {
			os.RemoveAll(dir)
			b.log().Error("bundle delivered with the initramfs refused and removed; it will be fetched", "digest", digest, "dir", dir, "err", err)
			continue
		}
		if b.ready == nil {
			b.ready = map[string]readyBundle{}
		}
		b.ready[digest] = readyBundle{dir: dir, cfg: cfg}
		// Unpacked by the kernel: the time is the hash's alone.
		b.logReady(digest, "initramfs", start, 0)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// logReady logs a bundle made ready: from where, and how long it took.
func (b *Bundles) logReady(digest, from string, start time.Time, unpackTook time.Duration) {
	b.log().Info("bundle checked and unpacked", "digest", digest, "from", from,
		"ms", ms(time.Since(start)), "unpack_ms", ms(unpackTook), "uptime_ms", Uptime())
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

// TakeBundles lists the bundle trees the kernel unpacked into dir: the
// directories named by a digest's 64 hex digits (anything else is left).
// A missing dir is no bundles. Each is checked before use.
func TakeBundles(dir string) (map[string]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bundles in %s: %w", dir, err)
	}
	trees := map[string]string{}
	for _, e := range ents {
		digest := "sha256:" + e.Name()
		if _, err := digestHex(digest); err != nil || !e.IsDir() {
			continue
		}
		trees[digest] = filepath.Join(dir, e.Name())
	}
	return trees, nil
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

// Held lists the digests of the bundles this worker holds, for its
// hello: verified ones, and delivered ones still being checked
// (CheckDelivered, started here if it was not: the hello does not wait for
// it; a job does, and fetches a bundle that failed). A cache file is
// hashed (and removed if it does not match).
func (b *Bundles) Held() []string {
	b.CheckDelivered()
	var held []string
	select {
	case <-b.early:
		for digest := range b.ready {
			held = append(held, digest)
		}
	default:
		if b.early == nil { // nothing delivered
			for digest := range b.ready {
				held = append(held, digest)
			}
		} else {
			held = append(held, b.checking...)
		}
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
	b.CheckDelivered()
	if b.early != nil && !b.waited {
		// How long the first job waited for the check: the part of the
		// hash the boot's waits did not hide.
		t0 := time.Now()
		<-b.early
		b.waited = true
		b.log().Info("job waited for the delivered bundles' check", "ms", ms(time.Since(t0)), "uptime_ms", Uptime())
	}
	if r, ok := b.ready[ref.Digest]; ok {
		return r.dir, r.cfg, nil
	}
	dir := filepath.Join(b.workDir(), h)
	start := time.Now()
	done := func(from string) { b.logReady(ref.Digest, from, start, b.unpackTook) }
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
	for d, r := range b.ready {
		os.RemoveAll(r.dir) // a delivered tree too: its memory is freed
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
		b.ready = map[string]readyBundle{}
	}
	b.ready[digest] = readyBundle{dir: dir, cfg: cfg}
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
