package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/orchestrator/httpguard"
)

// TestHandlerAndClient: the native deploy routes behind mforch's guard,
// called by the Client mforch deploy uses: deploy (with every
// architecture's digests), list, refusals with their status and fix,
// delete, and credentials.
func TestHandlerAndClient(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the wordcount function")
	}
	r := newRegistry(t, nil)
	ref := r.push("wc:1", fnImage(t, "1"))
	s, _ := newStore(t, t.TempDir(), nil)
	authDir := t.TempDir()
	creds, _, err := httpguard.LoadOrCreateCredentials(authDir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpguard.Wrap(s.Handler([]string{"x86"}), httpguard.Config{User: creds.User, Password: creds.Password}))
	defer srv.Close()
	api, err := httpguard.NewEndpoint(srv.URL, authDir)
	if err != nil {
		t.Fatal(err)
	}
	c := Client{API: api}
	ctx := context.Background()

	rec, err := c.Deploy(ctx, "wc", ref)
	if err != nil {
		t.Fatal(err)
	}
	if x := rec.Archs["x86"]; rec.Name != "wc" || rec.Image != ref || !strings.HasPrefix(x.ImageDigest, "sha256:") || !strings.HasPrefix(x.Bundle.Digest, "sha256:") || x.Bundle.Size == 0 {
		t.Errorf("record %+v", rec)
	}
	recs, err := c.List(ctx)
	if err != nil || len(recs) != 1 || recs[0].Archs["x86"] != rec.Archs["x86"] {
		t.Fatalf("list: %+v %v", recs, err)
	}
	var out bytes.Buffer
	WriteRecords(&out, recs)
	if !strings.Contains(out.String(), "wc") || !strings.Contains(out.String(), "linux/amd64") || !strings.Contains(out.String(), rec.Archs["x86"].Bundle.Digest[:19]) {
		t.Errorf("list output:\n%s", out.String())
	}

	if _, err := c.Deploy(ctx, "nope", r.host+"/missing:1"); err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "image not found") {
		t.Errorf("deploy of a missing image: %v; want 400 image not found", err)
	}
	if err := c.Delete(ctx, "wc"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "wc"); err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "not deployed") {
		t.Errorf("second delete: %v; want 404 not deployed", err)
	}
	if recs, err := c.List(ctx); err != nil || len(recs) != 0 {
		t.Errorf("list after delete: %+v %v", recs, err)
	}

	// Without credentials: the error says which flag to pass, no password.
	anon, _ := httpguard.NewEndpoint(srv.URL, t.TempDir())
	if _, err := (Client{API: anon}).List(ctx); err == nil || !strings.Contains(err.Error(), "--auth") {
		t.Errorf("list without credentials: %v; want the fix", err)
	}
	// Another server (an OpenFaaS gateway's port): 404 says so.
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	oapi, _ := httpguard.NewEndpoint(other.URL, authDir)
	if _, err := (Client{API: oapi}).List(ctx); err == nil || !strings.Contains(err.Error(), "--addr") {
		t.Errorf("list on another server: %v; want the fix", err)
	}
}

// TestHTTPStatusShared: the errors of the shared path (mforch serve
// --queue, openfaas.Provider.Native) answer 409 and 503, wrapped or not.
func TestHTTPStatusShared(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{ErrConflict, http.StatusConflict},
		{fmt.Errorf("%w: run mforch deploy again", ErrConflict), http.StatusConflict},
		{fmt.Errorf("%w: nats: timeout", ErrUnavailable), http.StatusServiceUnavailable},
		{fmt.Errorf("%w: x", ErrNotDeployed), http.StatusNotFound},
		{errors.New("disk full"), http.StatusInternalServerError},
	} {
		if got := HTTPStatus(tt.err); got != tt.want {
			t.Errorf("HTTPStatus(%v) = %d; want %d", tt.err, got, tt.want)
		}
	}
}
