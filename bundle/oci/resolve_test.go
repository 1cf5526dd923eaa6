package oci

import (
	"context"
	"debug/elf"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/microfaas/microfaas/bundle"
	"github.com/microfaas/microfaas/target"
)

// serveRegistry runs go-containerregistry's registry on 127.0.0.1 (wrapped,
// if wrap is set) and returns its host:port.
func serveRegistry(t *testing.T, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// push writes an image or index to ref (go-containerregistry allows plain
// HTTP to loopback for the test's own pushes).
func push(t *testing.T, ref string, x any, opts ...remote.Option) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	switch x := x.(type) {
	case v1.Image:
		err = remote.Write(r, x, opts...)
	case v1.ImageIndex:
		err = remote.WriteIndex(r, x, opts...)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func digest(t *testing.T, x interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	d, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func index(t *testing.T, adds ...mutate.IndexAddendum) v1.ImageIndex {
	t.Helper()
	return mutate.AppendManifests(empty.Index, adds...)
}

func withPlatform(x mutate.Appendable, p v1.Platform) mutate.IndexAddendum {
	return mutate.IndexAddendum{Add: x, Descriptor: v1.Descriptor{Platform: &p}}
}

var (
	amd64 = Platform(target.X86)
	armv7 = Platform(target.ARMv7)
	arm64 = v1.Platform{OS: "linux", Architecture: "arm64"}
)

// TestResolve resolves references through a real registry on loopback,
// an OCI layout directory and a docker save tarball.
func TestResolve(t *testing.T) {
	ctx := context.Background()
	host := serveRegistry(t, nil)
	x86img, _ := image(t, "amd64", "", []ent{run})
	armimg, _ := image(t, "arm", "v7", []ent{reg("app/run", miniELF(elf.EM_ARM))})
	attest, _ := image(t, "unknown", "", []ent{reg("x", "in-toto")})
	both := index(t, withPlatform(x86img, amd64), withPlatform(armimg, armv7), withPlatform(attest, v1.Platform{OS: "unknown", Architecture: "unknown"}))
	push(t, host+"/fn/multi:1", both)
	push(t, host+"/fn/nested:1", index(t, mutate.IndexAddendum{Add: index(t, withPlatform(armimg, armv7))}, withPlatform(x86img, amd64)))
	push(t, host+"/fn/x86:1", x86img)
	// An index entry without a platform gets it from the image's config.
	push(t, host+"/fn/bare:1", index(t, mutate.IndexAddendum{Add: armimg}))
	// An image whose config names no platform (crane append with no base).
	cf, _ := x86img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "", ""
	noplat, err := mutate.ConfigFile(x86img, cf)
	if err != nil {
		t.Fatal(err)
	}
	push(t, host+"/fn/noplat:1", noplat)

	layoutDir := filepath.Join(t.TempDir(), "oci")
	lp, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendIndex(both); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "x86.tar")
	tag, _ := name.NewTag("example.com/x86:1")
	if err := tarball.WriteToFile(tarPath, tag, x86img); err != nil {
		t.Fatal(err)
	}

	x86d, armd := digest(t, x86img), digest(t, armimg)
	r := &Resolver{Insecure: []string{host}}
	tests := []struct {
		name  string
		ref   string
		plats []v1.Platform
		want  []string // digests, in plats' order
		text  string   // ErrNoPlatform with this text, when set
	}{
		{"a two-platform index, both", host + "/fn/multi:1", []v1.Platform{amd64, armv7}, []string{x86d, armd}, ""},
		{"a two-platform index, one", host + "/fn/multi:1", []v1.Platform{armv7}, []string{armd}, ""},
		{"a nested index", host + "/fn/nested:1", []v1.Platform{armv7, amd64}, []string{armd, x86d}, ""},
		{"an index entry without a platform", host + "/fn/bare:1", []v1.Platform{armv7}, []string{armd}, ""},
		{"by digest", host + "/fn/multi@" + digest(t, both), []v1.Platform{amd64}, []string{x86d}, ""},
		{"an image", host + "/fn/x86:1", []v1.Platform{amd64}, []string{x86d}, ""},
		{"an OCI layout directory", layoutDir, []v1.Platform{amd64, armv7}, []string{x86d, armd}, ""},
		{"a docker save tarball", tarPath, []v1.Platform{amd64}, []string{x86d}, ""},
		{"an index without the platform", host + "/fn/multi:1", []v1.Platform{amd64, arm64}, nil,
			"has no image for linux/arm64 (it has: linux/amd64, linux/arm/v7)"},
		{"an image of another platform", host + "/fn/x86:1", []v1.Platform{armv7}, nil,
			"has no image for linux/arm/v7 (it has: linux/amd64)"},
		{"a tarball of another platform", tarPath, []v1.Platform{armv7}, nil, "(it has: linux/amd64)"},
		{"an image with no platform set", host + "/fn/noplat:1", []v1.Platform{amd64}, nil,
			"has no image for linux/amd64 (it has: no platform set): build and push one for that platform too (docker buildx build --platform linux/amd64, or crane mutate --set-platform linux/amd64)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Resolve(ctx, tt.ref, tt.plats)
			if tt.text != "" {
				if !errors.Is(err, ErrNoPlatform) || !errors.Is(err, bundle.ErrCannotRun) || !strings.Contains(err.Error(), tt.text) {
					t.Fatalf("err = %v, want ErrNoPlatform (ErrCannotRun) with %q", err, tt.text)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d resolved, want %d", len(got), len(tt.want))
			}
			for i, g := range got {
				if g.Digest != tt.want[i] || PlatformString(g.Platform) != PlatformString(tt.plats[i]) || digest(t, g.Image) != tt.want[i] {
					t.Errorf("%d: %s %s (image %s), want %s %s", i, PlatformString(g.Platform), g.Digest, digest(t, g.Image), PlatformString(tt.plats[i]), tt.want[i])
				}
			}
		})
	}
}

// TestResolvePlainHTTP: go-containerregistry falls back to plain HTTP for
// loopback and private addresses on its own; the Resolver allows it only
// for the hosts on its Insecure list, loopback included.
func TestResolvePlainHTTP(t *testing.T) {
	ctx := context.Background()
	host := serveRegistry(t, nil)
	img, _ := image(t, "amd64", "", []ent{run})
	push(t, host+"/fn/x:1", img)
	tests := []struct {
		name     string
		insecure []string
		ok       bool
	}{
		{"not listed", nil, false},
		{"another host listed", []string{"registry.local:5000", "127.0.0.2"}, false},
		{"host:port listed", []string{host}, true},
		{"host listed, any port", []string{"127.0.0.1"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := (&Resolver{Insecure: tt.insecure}).Resolve(ctx, host+"/fn/x:1", []v1.Platform{amd64})
			if tt.ok && err != nil {
				t.Fatal(err)
			}
			if !tt.ok && (!errors.Is(err, ErrPlainHTTP) || !strings.Contains(err.Error(), "--insecure-registry "+host)) {
				t.Fatalf("err = %v, want ErrPlainHTTP naming --insecure-registry %s", err, host)
			}
		})
	}
}

// TestResolveBasicAuth: a registry that wants a user and password gets
// them from a docker config file.
func TestResolveBasicAuth(t *testing.T) {
	ctx := context.Background()
	const user, pass = "alice", "s3cret"
	host := serveRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	img, _ := image(t, "amd64", "", []ent{run})
	push(t, host+"/private/fn:1", img, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
	config := func(user, pass string) string {
		f := filepath.Join(t.TempDir(), "config.json")
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		if err := os.WriteFile(f, fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, host, auth), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	tests := []struct {
		name   string
		config string // "" for no keychain
		ok     bool
	}{
		{"no credentials", "", false},
		{"a wrong password", config(user, "nope"), false},
		{"credentials from the config file", config(user, pass), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Resolver{Insecure: []string{host}}
			if tt.config != "" {
				kc, err := ConfigKeychain(tt.config)
				if err != nil {
					t.Fatal(err)
				}
				r.Keychain = kc
			}
			got, err := r.Resolve(ctx, host+"/private/fn:1", []v1.Platform{amd64})
			if !tt.ok {
				var terr *transport.Error
				if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
					t.Fatalf("err = %v, want the registry's 401", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got[0].Digest != digest(t, img) {
				t.Errorf("digest %s, want %s", got[0].Digest, digest(t, img))
			}
		})
	}
	if _, err := ConfigKeychain(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("a missing config file gave no error")
	}
}
