package testfn

import (
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry starts a real OCI registry (go-containerregistry's
// pkg/registry, in memory) on 127.0.0.1 for the test's lifetime and
// returns its host ("127.0.0.1:PORT"). It speaks plain HTTP: Push's
// client allows that for loopback hosts; an oci.Resolver (and mforch) must
// list the host as insecure.
func Registry(t testing.TB) string {
	t.Helper()
	// The registry logs every request; keep the test output for failures.
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// Push uploads an image (v1.Image) or a multi-platform index
// (v1.ImageIndex) to ref, e.g. Registry(t)+"/wd:1", and returns the
// digest ref now names ("sha256:...").
func Push(t testing.TB, ref string, artifact any) string {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	var d v1.Hash
	switch a := artifact.(type) {
	case v1.Image:
		err = remote.Write(r, a)
		if err == nil {
			d, err = a.Digest()
		}
	case v1.ImageIndex:
		err = remote.WriteIndex(r, a)
		if err == nil {
			d, err = a.Digest()
		}
	default:
		t.Fatalf("push %s: %T is neither a v1.Image nor a v1.ImageIndex", ref, artifact)
	}
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return d.String()
}
