// Package deploy keeps the functions deployed at run time: each deployment
// names an OCI image, resolved for every architecture of the cluster
// (bundle/oci), flattened and checked into a bundle file named by its
// SHA-256 (<state folder>/bundles/sha256-<hex>), and recorded (name, image,
// per-architecture image digest and bundle, whether it is an OpenFaaS
// watchdog image) in deployments.json beside the bundles, so a restart
// keeps them. Store implements orchestrator.Bundles: the orchestrator sends
// a deployed function's jobs with the bundle for the worker's architecture.
// Bundles no deployment uses any more are removed (GC).
package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/microfaas/microfaas/bundle"
	"github.com/microfaas/microfaas/bundle/oci"
	"github.com/microfaas/microfaas/internal/statedir"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/target"
)

// Errors of the Store. Deploy also returns bundle/oci's and bundle's
// (oci.ErrNoPlatform, bundle.ErrCannotRun, bundle.ErrImageTooLarge,
// bundle.ErrUnsafeImage) and the registry errors below; HTTPStatus maps
// them all.
var (
	// ErrNotDeployed: no deployment has that name.
	ErrNotDeployed = errors.New("function not deployed")
	// ErrBadName: a deployment name the worker protocol and the file
	// system cannot carry.
	ErrBadName = errors.New("bad function name")
	// ErrBadArch: an architecture no target has.
	ErrBadArch = errors.New("bad architecture")
	// ErrUnauthorized: the registry refused the credentials (or wanted
	// some): give them with mforch serve --registry-config.
	ErrUnauthorized = errors.New("registry refused access")
	// ErrBadImage: not an image reference.
	ErrBadImage = errors.New("bad image reference")
	// ErrImageNotFound: the registry has no such repository or tag.
	ErrImageNotFound = errors.New("image not found")
	// ErrUnreachable: the registry could not be reached or answered
	// something that is not a registry's answer.
	ErrUnreachable = errors.New("registry unreachable")
	// ErrConflict: with mforch serve --queue, another instance (or
	// request) changed or removed the deployment while this one pulled
	// its image; nothing was changed.
	ErrConflict = errors.New("changed through another mforch instance meanwhile")
	// ErrUnavailable: with mforch serve --queue, the deployment could not
	// be shared with the other instances (NATS away).
	ErrUnavailable = errors.New("cannot share the deployment with the other mforch instances (is NATS reachable?)")
)

// Arch is one architecture's part of a deployment.
type Arch struct {
	// Platform is the OCI platform resolved (linux/amd64, linux/arm/v7).
	Platform string `json:"platform"`
	// ImageDigest is the image manifest's digest for that platform.
	ImageDigest string `json:"image_digest"`
	// Bundle is the bundle file built from it.
	Bundle protocol.BundleRef `json:"bundle"`
}

// Record is one deployment.
type Record struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	// Archs holds one entry per target name ("x86", "arm").
	Archs map[string]Arch `json:"archs"`
	// Watchdog: the image's command is an OpenFaaS watchdog (fwatchdog),
	// which serves HTTP; calls go to it as HTTP requests.
	Watchdog bool      `json:"watchdog"`
	Deployed time.Time `json:"deployed"`
}

// Config sets up a Store. Zero values take the defaults noted.
type Config struct {
	// Dir holds the bundles and deployments.json (default: bundles/ in
	// the state folder, internal/statedir).
	Dir string
	// Resolver pulls images (default: anonymous, HTTPS only).
	Resolver *oci.Resolver
	// Limits bound what one image may unpack to (bundle.DefaultLimits).
	Limits bundle.Limits
	// AllowLocal lets a deployment name an OCI layout directory or a
	// docker save tarball on mforch's host instead of a registry
	// reference. Off, such paths are refused: API callers must not make
	// mforch read its own files.
	AllowLocal bool
	Log        *slog.Logger
	Now        func() time.Time // default: time.Now
}

// Store is the deployments and their bundles. Safe for concurrent use;
// pulls and bundle builds run outside its lock.
type Store struct {
	dir      string
	resolver *oci.Resolver
	limits   bundle.Limits
	local    bool
	log      *slog.Logger
	now      func() time.Time

	mu   sync.Mutex
	recs map[string]Record
	// pending are bundle files written by a Deploy that has not recorded
	// them yet: GC leaves them alone.
	pending map[string]int
}

// recordsFile is the deployments' file in Dir.
const recordsFile = "deployments.json"

// New opens (creating it if needed) the store in cfg.Dir and reads its
// deployments.
func New(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		d, err := statedir.Dir()
		if err != nil {
			return nil, err
		}
		cfg.Dir = filepath.Join(d, "bundles")
	}
	if cfg.Resolver == nil {
		cfg.Resolver = &oci.Resolver{}
	}
	if cfg.Limits == (bundle.Limits{}) {
		cfg.Limits = bundle.DefaultLimits
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("bundle folder: %w", err)
	}
	s := &Store{dir: cfg.Dir, resolver: cfg.Resolver, limits: cfg.Limits, local: cfg.AllowLocal, log: cfg.Log, now: cfg.Now,
		recs: map[string]Record{}, pending: map[string]int{}}
	if err := s.load(); err != nil {
		return nil, err
	}
	// Temporary files of builds a previous run did not finish.
	tmps, _ := filepath.Glob(filepath.Join(s.dir, tmpPattern))
	for _, t := range tmps {
		os.Remove(t)
	}
	return s, nil
}

// Dir is the folder of the bundles and deployments.json.
func (s *Store) Dir() string { return s.dir }

// validName is what a deployment may be called: the OpenFaaS provider's
// name characters (faas-provider's NameExpression).
var validName = regexp.MustCompile(`^[-a-zA-Z_0-9.]{1,128}$`)

// Deploy resolves image for every architecture in archs (target names),
// builds and stores a bundle for each, and records the deployment under
// name, replacing an earlier one (a moving tag is resolved again). Bundles
// no deployment uses any more are then removed.
func (s *Store) Deploy(ctx context.Context, name, image string, archs []string) (Record, error) {
	if !validName.MatchString(name) || name == "." || name == ".." {
		return Record{}, fmt.Errorf("%w %q: use letters, digits, '-', '_' and '.'", ErrBadName, name)
	}
	if len(archs) == 0 {
		return Record{}, fmt.Errorf("%w: no architecture to deploy %s for (the cluster has no workers?)", ErrBadArch, name)
	}
	var targets []*target.Target
	var plats []v1.Platform
	for _, a := range archs {
		t, err := target.Parse(a)
		if err != nil {
			return Record{}, fmt.Errorf("%w: %w", ErrBadArch, err)
		}
		if slices.Contains(targets, t) {
			continue
		}
		targets = append(targets, t)
		plats = append(plats, oci.Platform(t))
	}
	if _, err := os.Stat(image); err == nil && !s.local {
		return Record{}, fmt.Errorf("%w: %q is a path on the mforch host: deploy images from a registry", ErrBadImage, image)
	}
	start := s.now()
	resolved, err := s.resolver.Resolve(ctx, image, plats)
	if err != nil {
		return Record{}, fmt.Errorf("image %s: %w", image, classify(err))
	}
	rec := Record{Name: name, Image: image, Archs: map[string]Arch{}}
	// The bundles written stay safe from GC until the record holds them;
	// then GC removes what this deploy replaced, or wrote before failing.
	var written []string
	defer func() {
		if len(written) > 0 {
			s.release(written)
			s.gc()
		}
	}()
	for i, t := range targets {
		r, ok := findPlatform(resolved, plats[i])
		if !ok {
			return Record{}, fmt.Errorf("image %s: %w: nothing resolved for %s", image, bundle.ErrCannotRun, oci.PlatformString(plats[i]))
		}
		ref, cfg, err := s.build(r.Image, t)
		if err != nil {
			return Record{}, fmt.Errorf("image %s for %s (%s): %w", image, oci.PlatformString(plats[i]), r.Digest, classify(err))
		}
		written = append(written, ref.Digest)
		if i > 0 && cfg.Watchdog() != rec.Watchdog {
			return Record{}, fmt.Errorf("image %s: %w: its platforms disagree on whether fwatchdog is the command", image, bundle.ErrCannotRun)
		}
		rec.Watchdog = cfg.Watchdog()
		rec.Archs[t.Name] = Arch{Platform: oci.PlatformString(plats[i]), ImageDigest: r.Digest, Bundle: ref}
	}
	rec.Deployed = s.now().UTC()
	s.mu.Lock()
	old, replaced := s.recs[name]
	s.recs[name] = rec
	err = s.saveLocked()
	if err != nil {
		// Keep memory and disk the same.
		if replaced {
			s.recs[name] = old
		} else {
			delete(s.recs, name)
		}
	}
	s.mu.Unlock()
	if err != nil {
		return Record{}, err
	}
	s.log.Info("function deployed", "function", name, "image", image, "watchdog", rec.Watchdog,
		"archs", archDigests(rec), "took", s.now().Sub(start).Round(time.Millisecond))
	return rec, nil
}

func findPlatform(rs []oci.Resolved, p v1.Platform) (oci.Resolved, bool) {
	for _, r := range rs {
		if r.Platform.OS == p.OS && r.Platform.Architecture == p.Architecture && r.Platform.Variant == p.Variant {
			return r, true
		}
	}
	return oci.Resolved{}, false
}

func archDigests(r Record) string {
	var parts []string
	for _, a := range sortedKeys(r.Archs) {
		parts = append(parts, a+"="+r.Archs[a].Bundle.Digest)
	}
	return strings.Join(parts, " ")
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// tmpPattern names bundles being written.
const tmpPattern = ".tmp-bundle-*"

// filePrefix + hex digest names a bundle file.
const filePrefix = "sha256-"

// build writes img's bundle for t into a temporary file, then renames it
// to its content address; a file already there with that name is kept.
// The digest stays pending (safe from GC) until release.
func (s *Store) build(img v1.Image, t *target.Target) (protocol.BundleRef, bundle.Config, error) {
	f, err := os.CreateTemp(s.dir, tmpPattern)
	if err != nil {
		return protocol.BundleRef{}, bundle.Config{}, fmt.Errorf("bundle folder: %w", err)
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	cfg, err := oci.Build(img, t.ELF, s.limits, cw)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return protocol.BundleRef{}, bundle.Config{}, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	ref := protocol.BundleRef{Digest: "sha256:" + sum, Size: cw.n}
	final := filepath.Join(s.dir, filePrefix+sum)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending[ref.Digest]++
	if fi, err := os.Stat(final); err == nil && fi.Mode().IsRegular() && fi.Size() == cw.n {
		return ref, cfg, nil // the same bytes, by their name: reused
	}
	if err := os.Rename(f.Name(), final); err != nil {
		s.pending[ref.Digest]--
		return protocol.BundleRef{}, bundle.Config{}, fmt.Errorf("bundle folder: %w", err)
	}
	return ref, cfg, nil
}

// release ends the GC protection build gave digests.
func (s *Store) release(digests []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range digests {
		if s.pending[d]--; s.pending[d] <= 0 {
			delete(s.pending, d)
		}
	}
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

// Delete removes the deployment name and the bundles only it used.
func (s *Store) Delete(name string) error {
	s.mu.Lock()
	old, ok := s.recs[name]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotDeployed, name)
	}
	delete(s.recs, name)
	err := s.saveLocked()
	if err != nil {
		s.recs[name] = old
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.log.Info("function removed", "function", name, "image", old.Image)
	s.gc()
	return nil
}

// Get returns the deployment name.
func (s *Store) Get(name string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[name]
	return r, ok
}

// List returns every deployment, sorted by name.
func (s *Store) List() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Record, 0, len(s.recs))
	for _, n := range sortedKeys(s.recs) {
		out = append(out, s.recs[n])
	}
	return out
}

// Bundle implements orchestrator.Bundles: function's bundle for workers of
// arch (a target name).
func (s *Store) Bundle(function, arch string) (protocol.BundleRef, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.recs[function].Archs[arch]
	return a.Bundle, ok
}

// digestHex is the hex of a "sha256:<64 hex>" digest.
var digestHex = regexp.MustCompile(`^sha256:([0-9a-f]{64})$`)

// Path is the file of the bundle digest ("sha256:<hex>"); the name is
// checked, so a digest from the network never names another file.
func (s *Store) Path(digest string) (string, error) {
	m := digestHex.FindStringSubmatch(digest)
	if m == nil {
		return "", fmt.Errorf("bundle digest %q: want sha256: and 64 hex digits", digest)
	}
	return filepath.Join(s.dir, filePrefix+m[1]), nil
}

// Open implements orchestrator.Bundles: the bundle file with that digest.
func (s *Store) Open(digest string) (*os.File, error) {
	p, err := s.Path(digest)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

// GC removes the bundle files no deployment uses; it returns their names.
// Deploy and Delete run it themselves.
func (s *Store) GC() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	used := map[string]bool{}
	for _, r := range s.recs {
		for _, a := range r.Archs {
			used[a.Bundle.Digest] = true
		}
	}
	for d := range s.pending {
		used[d] = true
	}
	names, err := filepath.Glob(filepath.Join(s.dir, filePrefix+"*"))
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, p := range names {
		base := filepath.Base(p)
		if used["sha256:"+strings.TrimPrefix(base, filePrefix)] {
			continue
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, base)
	}
	return removed, errors.Join(errs...)
}

func (s *Store) gc() {
	removed, err := s.GC()
	if len(removed) > 0 {
		s.log.Info("unused bundles removed", "bundles", removed)
	}
	if err != nil {
		s.log.Warn("removing unused bundles", "err", err)
	}
}

// load reads deployments.json, if there is one.
func (s *Store) load() error {
	p := filepath.Join(s.dir, recordsFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deployments: %w", err)
	}
	var recs []Record
	if err := json.Unmarshal(b, &recs); err != nil {
		return fmt.Errorf("deployments file %s: %w (fix or remove it; its bundles are then removed)", p, err)
	}
	for _, r := range recs {
		s.recs[r.Name] = r
	}
	return nil
}

// saveLocked writes deployments.json atomically, mode 0600 (s.mu held).
func (s *Store) saveLocked() error {
	recs := make([]Record, 0, len(s.recs))
	for _, n := range sortedKeys(s.recs) {
		recs = append(recs, s.recs[n])
	}
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(s.dir, recordsFile)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("deployments file: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("deployments file: %w", err)
	}
	return nil
}
