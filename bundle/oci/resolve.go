// Package oci turns OCI container images into bundles: it resolves an image
// reference to one image per worker platform (Resolver), flattens an
// image's layers into a tree that cannot reach outside itself (Flatten),
// checks the tree can run on a worker (Check) and writes the bundle (Build).
// mfbuild (baked-in functions) and mforch (run-time deploys) share it, so
// both flatten an image the same way.
package oci

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/microfaas/microfaas/bundle"
	"github.com/microfaas/microfaas/target"
)

// ErrNoPlatform means an image has no variant for a platform a worker
// needs. It wraps bundle.ErrCannotRun.
var ErrNoPlatform = fmt.Errorf("%w: no image for the worker's platform", bundle.ErrCannotRun)

// ErrPlainHTTP means a registry was to be reached over plain HTTP and is
// not on the Resolver's Insecure list.
var ErrPlainHTTP = errors.New("plain HTTP to a registry refused")

// Platform is the OCI platform of a target's container images.
func Platform(t *target.Target) v1.Platform {
	return v1.Platform{OS: "linux", Architecture: t.OCIArch, Variant: t.OCIVariant}
}

// Resolver finds the images a reference names.
type Resolver struct {
	// Keychain gives registry credentials (ConfigKeychain reads a docker
	// config file); nil pulls anonymously.
	Keychain authn.Keychain
	// Insecure lists registry hosts ("host" for any port, or "host:port")
	// that may be reached over plain HTTP: local registries. Every other
	// registry is reached over HTTPS only, loopback ones included.
	Insecure []string
}

// Resolved is the image of one platform.
type Resolved struct {
	Platform v1.Platform // the platform asked for
	Digest   string      // the image manifest's digest, "sha256:<hex>"
	Image    v1.Image
}

// maxIndexDepth and maxManifests bound what a hostile index can make
// Resolve walk.
const (
	maxIndexDepth = 4
	maxManifests  = 1000
)

// Resolve returns one image for each of plats, in that order. ref is a
// registry reference (a tag or a digest; an image or a multi-platform
// index, nested indexes included), an OCI layout directory or a `docker
// save` tarball. A single-platform image whose config names another
// platform is refused like an index without it: ErrNoPlatform, naming the
// platforms the image has.
func (r *Resolver) Resolve(ctx context.Context, ref string, plats []v1.Platform) ([]Resolved, error) {
	var cands []candidate
	var err error
	if fi, serr := os.Stat(ref); serr == nil {
		cands, err = localCandidates(ref, fi.IsDir())
	} else {
		cands, err = r.remoteCandidates(ctx, ref)
	}
	if err != nil {
		return nil, err
	}
	out := make([]Resolved, 0, len(plats))
	for _, p := range plats {
		c, ok := pick(cands, p)
		if !ok {
			var has []string
			for _, c := range cands {
				if c.plat.OS == "" && c.plat.Architecture == "" {
					// An image built without a platform (crane append with
					// no base, some hand-made images): say so, not "/".
					has = append(has, "no platform set")
					continue
				}
				has = append(has, PlatformString(c.plat))
			}
			return nil, fmt.Errorf("%w: %s has no image for %s (it has: %s): build and push one for that platform too (docker buildx build --platform %s, or crane mutate --set-platform %s)",
				ErrNoPlatform, ref, PlatformString(p), strings.Join(has, ", "), PlatformString(p), PlatformString(p))
		}
		img, err := c.load()
		if err != nil {
			return nil, fmt.Errorf("%s for %s: %w", ref, PlatformString(p), err)
		}
		d, err := img.Digest()
		if err != nil {
			return nil, fmt.Errorf("%s for %s: %w", ref, PlatformString(p), err)
		}
		out = append(out, Resolved{Platform: p, Digest: d.String(), Image: img})
	}
	return out, nil
}

// PlatformString is "os/arch" or "os/arch/variant".
func PlatformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// candidate is one image of a reference, with its platform, loaded only
// when picked.
type candidate struct {
	plat v1.Platform
	load func() (v1.Image, error)
}

// pick is the candidate for p: the same platform, else a compatible one
// (an image that names no variant; for arm, an older variant: v6 code runs
// on v7).
func pick(cands []candidate, p v1.Platform) (candidate, bool) {
	for _, c := range cands {
		if c.plat.OS == p.OS && c.plat.Architecture == p.Architecture && c.plat.Variant == p.Variant {
			return c, true
		}
	}
	for _, c := range cands {
		if c.plat.OS == p.OS && c.plat.Architecture == p.Architecture && compatibleVariant(c.plat.Architecture, c.plat.Variant, p.Variant) {
			return c, true
		}
	}
	return candidate{}, false
}

func compatibleVariant(arch, have, want string) bool {
	if have == "" || have == want {
		return true
	}
	if arch != "arm" || !strings.HasPrefix(have, "v") || !strings.HasPrefix(want, "v") {
		return false
	}
	h, err1 := strconv.Atoi(have[1:])
	w, err2 := strconv.Atoi(want[1:])
	return err1 == nil && err2 == nil && h <= w
}

func imageCandidate(img v1.Image) (candidate, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return candidate{}, fmt.Errorf("image config: %w", err)
	}
	return candidate{plat: v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
		load: func() (v1.Image, error) { return img, nil }}, nil
}

// indexCandidates lists an index's images, nested indexes included.
// Entries that name no platform get it from their image's config;
// attestation manifests (unknown/unknown) are left out.
func indexCandidates(idx v1.ImageIndex, depth int, cands []candidate) ([]candidate, error) {
	if depth > maxIndexDepth {
		return nil, fmt.Errorf("%w: indexes nested more than %d deep", bundle.ErrUnsafeImage, maxIndexDepth)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range m.Manifests {
		if len(cands) >= maxManifests {
			return nil, fmt.Errorf("%w: more than %d manifests in its indexes", bundle.ErrImageTooLarge, maxManifests)
		}
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			if cands, err = indexCandidates(child, depth+1, cands); err != nil {
				return nil, err
			}
		case d.MediaType.IsImage():
			dg := d.Digest
			load := func() (v1.Image, error) { return idx.Image(dg) }
			if d.Platform == nil {
				img, err := load()
				if err != nil {
					return nil, err
				}
				c, err := imageCandidate(img)
				if err != nil {
					return nil, err
				}
				cands = append(cands, c)
				continue
			}
			if d.Platform.OS == "unknown" {
				continue
			}
			cands = append(cands, candidate{plat: v1.Platform{OS: d.Platform.OS, Architecture: d.Platform.Architecture, Variant: d.Platform.Variant}, load: load})
		}
	}
	return cands, nil
}

func localCandidates(p string, dir bool) ([]candidate, error) {
	if dir {
		idx, err := layout.ImageIndexFromPath(p)
		if err != nil {
			return nil, fmt.Errorf("%s is not an OCI layout directory: %w", p, err)
		}
		return indexCandidates(idx, 0, nil)
	}
	img, err := tarball.ImageFromPath(p, nil)
	if err != nil {
		return nil, fmt.Errorf("%s is not a docker save tarball: %w", p, err)
	}
	c, err := imageCandidate(img)
	if err != nil {
		return nil, err
	}
	return []candidate{c}, nil
}

func (r *Resolver) remoteCandidates(ctx context.Context, ref string) ([]candidate, error) {
	var nopts []name.Option
	if reg, err := name.ParseReference(ref); err == nil && r.insecure(reg.Context().RegistryStr()) {
		nopts = append(nopts, name.Insecure)
	}
	nref, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, fmt.Errorf("%q is not a file, an OCI layout directory or an image reference: %w", ref, err)
	}
	kc := r.Keychain
	if kc == nil {
		kc = authn.NewMultiKeychain() // anonymous
	}
	base := remote.DefaultTransport.(*http.Transport).Clone()
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc),
		remote.WithTransport(httpsOnly{base: base, r: r})}
	desc, err := remote.Get(nref, opts...)
	if err != nil {
		return nil, err
	}
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, err
		}
		return indexCandidates(idx, 0, nil)
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return nil, err
		}
		c, err := imageCandidate(img)
		if err != nil {
			return nil, err
		}
		return []candidate{c}, nil
	}
	return nil, fmt.Errorf("%w: %s is a %s, neither an image nor an index", bundle.ErrCannotRun, ref, desc.MediaType)
}

// insecure reports whether host ("host" or "host:port") is on the list.
func (r *Resolver) insecure(host string) bool {
	hostname := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		hostname = h
	}
	return slices.Contains(r.Insecure, host) || slices.Contains(r.Insecure, hostname)
}

// httpsOnly refuses every plain-HTTP request to a host not on the Insecure
// list, redirects included: go-containerregistry itself falls back to HTTP
// for loopback and private addresses.
type httpsOnly struct {
	base http.RoundTripper
	r    *Resolver
}

func (t httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !t.r.insecure(req.URL.Host) {
		return nil, fmt.Errorf("%w: %s is reached over plain HTTP; if it is a local registry you trust, list it as an insecure registry (mforch --insecure-registry %s)",
			ErrPlainHTTP, req.URL.Host, req.URL.Host)
	}
	return t.base.RoundTrip(req)
}

// ConfigKeychain reads registry credentials from a docker config file
// (its "auths" and "credHelpers"/"credsStore", looked up by repository,
// then by registry, as docker does).
func ConfigKeychain(file string) (authn.Keychain, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("registry credentials: %w", err)
	}
	defer f.Close()
	cf := configfile.New(file)
	if err := cf.LoadFromReader(f); err != nil {
		return nil, fmt.Errorf("registry credentials %s: not a docker config.json: %w", file, err)
	}
	return fileKeychain{cf}, nil
}

type fileKeychain struct{ cf *configfile.ConfigFile }

func (k fileKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	for _, key := range []string{target.String(), target.RegistryStr()} {
		if key == name.DefaultRegistry {
			key = authn.DefaultAuthKey
		}
		cfg, err := k.cf.GetAuthConfig(key)
		if err != nil {
			return nil, fmt.Errorf("registry credentials for %s: %w", key, err)
		}
		if cfg.Username != "" || cfg.Password != "" || cfg.Auth != "" || cfg.IdentityToken != "" || cfg.RegistryToken != "" {
			return authn.FromConfig(authn.AuthConfig{Username: cfg.Username, Password: cfg.Password, Auth: cfg.Auth,
				IdentityToken: cfg.IdentityToken, RegistryToken: cfg.RegistryToken}), nil
		}
	}
	return authn.Anonymous, nil
}
