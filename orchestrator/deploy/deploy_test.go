package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/microfaas/microfaas/bundle/oci"
	"github.com/microfaas/microfaas/internal/testfn"
	"github.com/microfaas/microfaas/internal/testlog"
	"github.com/microfaas/microfaas/protocol"
)

var (
	wordcountOnce sync.Once
	wordcountBin  []byte
)

// wordcount is the example user function built for linux/amd64 (once per
// test binary): a real static ELF for the bundle checks.
func wordcount(t *testing.T) []byte {
	t.Helper()
	wordcountOnce.Do(func() { wordcountBin = testfn.Wordcount(t, "../..", "amd64") })
	if wordcountBin == nil {
		t.Fatal("wordcount did not build")
	}
	return wordcountBin
}

// fnImage is an amd64 image running wordcount, with a version file that
// makes each version's bytes (and bundle) differ.
func fnImage(t *testing.T, version string) v1.Image {
	return testfn.Image(t, "amd64", map[string][]byte{"wordcount": wordcount(t), "version": []byte(version)},
		nil, "/wordcount")
}

// reg is a registry on loopback (go-containerregistry's pkg/registry).
type reg struct {
	t    *testing.T
	srv  *httptest.Server
	host string
}

func newRegistry(t *testing.T, wrap func(http.Handler) http.Handler) *reg {
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &reg{t: t, srv: srv, host: strings.TrimPrefix(srv.URL, "http://")}
}

// push puts img at repo:tag and returns the reference.
func (r *reg) push(repoTag string, img v1.Image, opts ...remote.Option) string {
	r.t.Helper()
	ref := r.host + "/" + repoTag
	tag, err := name.ParseReference(ref)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := remote.Write(tag, img, opts...); err != nil {
		r.t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

func newStore(t *testing.T, dir string, res *oci.Resolver) (*Store, *testlog.Buffer) {
	t.Helper()
	logs := &testlog.Buffer{}
	if res == nil {
		res = &oci.Resolver{Insecure: []string{"127.0.0.1"}} // the loopback registries
	}
	s, err := New(Config{Dir: dir, Resolver: res, Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("store log:\n%s", logs.String())
		}
	})
	return s, logs
}

// bundleFiles lists the bundle files in dir.
func bundleFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, filePrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range names {
		names[i] = filepath.Base(names[i])
	}
	return names
}

// checkBundle: the record's bundle file exists, is named by the SHA-256 of
// its bytes, has the recorded size, and Open gives it.
func checkBundle(t *testing.T, s *Store, ref Arch) {
	t.Helper()
	f, err := s.Open(ref.Bundle.Digest)
	if err != nil {
		t.Fatalf("open %s: %v", ref.Bundle.Digest, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if "sha256:"+sum != ref.Bundle.Digest || filepath.Base(f.Name()) != filePrefix+sum || n != ref.Bundle.Size {
		t.Errorf("bundle %s (%d bytes recorded): file %s has sha256:%s, %d bytes", ref.Bundle.Digest, ref.Bundle.Size, f.Name(), sum, n)
	}
}

// TestDeployRedeployDeleteRestart: a deploy pulls from a loopback registry
// and records the image digest and a content-addressed bundle; a restart
// keeps the record; a redeploy of the tag after it moved gives the new
// digest and the old bundle is collected; a delete collects the rest.
func TestDeployRedeployDeleteRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the wordcount function")
	}
	r := newRegistry(t, nil)
	v1img := fnImage(t, "1")
	ref := r.push("wordcount:latest", v1img)
	dir := t.TempDir()
	s, _ := newStore(t, dir, nil)
	ctx := context.Background()

	rec, err := s.Deploy(ctx, "wc", ref, []string{"x86"})
	if err != nil {
		t.Fatal(err)
	}
	want1, _ := v1img.Digest()
	x86 := rec.Archs["x86"]
	if rec.Image != ref || x86.Platform != "linux/amd64" || x86.ImageDigest != want1.String() || rec.Watchdog {
		t.Errorf("record %+v: want image %s, linux/amd64, image digest %s, not a watchdog", rec, ref, want1)
	}
	checkBundle(t, s, x86)
	if got, ok := s.Bundle("wc", "x86"); !ok || got != x86.Bundle {
		t.Errorf("Bundle(wc, x86) = %+v %v; want %+v", got, ok, x86.Bundle)
	}
	if _, ok := s.Bundle("wc", "arm"); ok {
		t.Error("Bundle(wc, arm): found, but the deployment is for x86 only")
	}
	if _, ok := s.Bundle("other", "x86"); ok {
		t.Error("Bundle(other, x86): found an undeployed function")
	}
	if fi, err := os.Stat(filepath.Join(dir, recordsFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("deployments file: %v, mode %v; want 0600", err, fi.Mode())
	}

	// The same image under a second name shares the bundle file, which
	// is reused, not written again.
	path, _ := s.Path(x86.Bundle.Digest)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deploy(ctx, "wc2", ref, []string{"x86"}); err != nil {
		t.Fatal(err)
	}
	if files := bundleFiles(t, dir); len(files) != 1 {
		t.Errorf("bundle files after deploying one image twice: %v; want one", files)
	}
	if after, err := os.Stat(path); err != nil || !os.SameFile(before, after) {
		t.Errorf("the bundle file was replaced by the second deploy (%v)", err)
	}
	if err := s.Delete("wc2"); err != nil {
		t.Fatal(err)
	}

	// Restart: the record is read back.
	s, _ = newStore(t, dir, nil)
	if got, ok := s.Get("wc"); !ok || got.Archs["x86"] != x86 || got.Image != ref {
		t.Fatalf("after a restart: %+v %v; want the record %+v", got, ok, rec)
	}
	checkBundle(t, s, x86)

	// The tag moves; a redeploy resolves it again.
	v2img := fnImage(t, "2")
	r.push("wordcount:latest", v2img)
	rec2, err := s.Deploy(ctx, "wc", ref, []string{"x86"})
	if err != nil {
		t.Fatal(err)
	}
	want2, _ := v2img.Digest()
	if got := rec2.Archs["x86"]; got.ImageDigest != want2.String() || got.Bundle.Digest == x86.Bundle.Digest {
		t.Errorf("redeploy of the moved tag: %+v; want image digest %s and a new bundle", got, want2)
	}
	checkBundle(t, s, rec2.Archs["x86"])
	if files := bundleFiles(t, dir); !slices.Equal(files, []string{filePrefix + strings.TrimPrefix(rec2.Archs["x86"].Bundle.Digest, "sha256:")}) {
		t.Errorf("bundle files after the redeploy: %v; want only the new one (the old collected)", files)
	}
	if _, err := s.Open(x86.Bundle.Digest); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("opening the collected bundle: %v; want not found", err)
	}

	if err := s.Delete("wc"); err != nil {
		t.Fatal(err)
	}
	if files := bundleFiles(t, dir); len(files) != 0 {
		t.Errorf("bundle files after the delete: %v; want none", files)
	}
	if err := s.Delete("wc"); !errors.Is(err, ErrNotDeployed) {
		t.Errorf("second delete: %v; want ErrNotDeployed", err)
	}
	s, _ = newStore(t, dir, nil)
	if got := s.List(); len(got) != 0 {
		t.Errorf("after delete and restart: %+v; want no deployments", got)
	}
}

// TestDeployRefused: images that cannot be deployed are refused with the
// error (and HTTP status) that names the fix, and leave no bundle behind.
func TestDeployRefused(t *testing.T) {
	r := newRegistry(t, nil)
	// An arm/v7 image only: nothing for the x86 workers.
	armOnly := testfn.Image(t, "arm", map[string][]byte{"app/f": []byte("not run")}, nil, "/app/f")
	cf, _ := armOnly.ConfigFile()
	cf = cf.DeepCopy()
	cf.Variant = "v7"
	armOnly, err := mutate.ConfigFile(armOnly, cf)
	if err != nil {
		t.Fatal(err)
	}
	armRef := r.push("armonly:1", armOnly)
	// An amd64 image whose entrypoint is not there.
	noEntry := r.push("noentry:1", testfn.Image(t, "amd64", map[string][]byte{"other": []byte("x")}, nil, "/missing"))
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	gone := strings.TrimPrefix(closed.URL, "http://") + "/fn:1"

	tests := []struct {
		name, image string
		archs       []string
		is          error
		status      int
		text        []string
	}{
		{"wrong platform", armRef, []string{"x86"}, oci.ErrNoPlatform, 400, []string{"linux/amd64", "linux/arm/v7"}},
		{"no entrypoint", noEntry, []string{"x86"}, nil, 400, []string{"/missing"}},
		{"no such tag", r.host + "/armonly:2", []string{"x86"}, ErrImageNotFound, 400, []string{"armonly"}},
		{"unreachable", gone, []string{"x86"}, ErrUnreachable, 502, []string{"reaches it"}},
		{"bad reference", "UPPER/Case::x", []string{"x86"}, ErrBadImage, 400, nil},
		{"bad arch", armRef, []string{"mips"}, ErrBadArch, 400, []string{"x86 or arm"}},
		{"no arch", armRef, nil, ErrBadArch, 400, nil},
		{"bad name", armRef, []string{"x86"}, ErrBadName, 400, nil},
		{"a path on the host", t.TempDir(), []string{"x86"}, ErrBadImage, 400, []string{"registry"}},
		{"plain HTTP not allowed", "localhost:1/fn:1", []string{"x86"}, oci.ErrPlainHTTP, 400, []string{"--insecure-registry"}},
	}
	dir := t.TempDir()
	s, _ := newStore(t, dir, &oci.Resolver{Insecure: []string{r.host, strings.TrimPrefix(closed.URL, "http://")}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fn := "fn"
			if tt.is == ErrBadName {
				fn = "../escape"
			}
			_, err := s.Deploy(context.Background(), fn, tt.image, tt.archs)
			if err == nil {
				t.Fatal("deployed")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("%v; want %v", err, tt.is)
			}
			if got := HTTPStatus(err); got != tt.status {
				t.Errorf("HTTPStatus(%v) = %d; want %d", err, got, tt.status)
			}
			for _, w := range tt.text {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v; want it to name %q", err, w)
				}
			}
		})
	}
	if files := bundleFiles(t, dir); len(files) != 0 {
		t.Errorf("bundle files after refused deploys: %v", files)
	}
	if got := s.List(); len(got) != 0 {
		t.Errorf("deployments after refused deploys: %+v", got)
	}
}

// TestRegistryCredentials: a registry that wants basic auth refuses an
// anonymous pull (400 naming --registry-config) and serves the pull with
// the credentials of a docker config.json.
func TestRegistryCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the wordcount function")
	}
	const user, pass = "ci", "s3cret"
	r := newRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if u, p, ok := req.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, req)
		})
	})
	ref := r.push("private:1", fnImage(t, "private"), remote.WithAuth(&authn.Basic{Username: user, Password: pass}))

	anon, _ := newStore(t, t.TempDir(), nil)
	_, err := anon.Deploy(context.Background(), "p", ref, []string{"x86"})
	if !errors.Is(err, ErrUnauthorized) || HTTPStatus(err) != 400 || !strings.Contains(err.Error(), "--registry-config") {
		t.Fatalf("anonymous pull: %v (status %d); want ErrUnauthorized, 400, naming --registry-config", err, HTTPStatus(err))
	}

	cfgFile := filepath.Join(t.TempDir(), "config.json")
	auths := map[string]any{"auths": map[string]any{r.host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}}}
	b, _ := json.Marshal(auths)
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := NewResolver(cfgFile, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := newStore(t, t.TempDir(), res)
	rec, err := s.Deploy(context.Background(), "p", ref, []string{"x86"})
	if err != nil {
		t.Fatalf("pull with the config's credentials: %v", err)
	}
	checkBundle(t, s, rec.Archs["x86"])

	if _, err := NewResolver(filepath.Join(t.TempDir(), "missing.json"), nil); err == nil || !strings.Contains(err.Error(), "--registry-config") {
		t.Errorf("missing config file: %v; want an error naming --registry-config", err)
	}
}

// TestOpenChecksDigest: Open and Path take only sha256: and 64 hex digits,
// so a digest from a worker never names another file.
func TestOpenChecksDigest(t *testing.T) {
	s, _ := newStore(t, t.TempDir(), nil)
	for _, d := range []string{"", "sha256:../../etc/passwd", "sha256:" + strings.Repeat("A", 64), "md5:" + strings.Repeat("0", 64),
		"sha256:" + strings.Repeat("0", 63), "sha256:" + strings.Repeat("0", 64) + "/x"} {
		if _, err := s.Open(d); err == nil || errors.Is(err, os.ErrNotExist) {
			t.Errorf("Open(%q): %v; want the digest refused", d, err)
		}
	}
	if _, err := s.Open("sha256:" + strings.Repeat("0", 64)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open of a well-formed digest with no file: %v; want not found", err)
	}
}

// TestGCKeepsUsedAndRemovesStray: GC removes bundle files no record uses
// and keeps the others and files that are not bundles.
func TestGCKeepsUsedAndRemovesStray(t *testing.T) {
	dir := t.TempDir()
	s, _ := newStore(t, dir, nil)
	used := strings.Repeat("a", 64)
	s.recs["f"] = Record{Name: "f", Archs: map[string]Arch{"x86": {Bundle: protocol.BundleRef{Digest: "sha256:" + used, Size: 1}}}}
	for _, n := range []string{filePrefix + used, filePrefix + strings.Repeat("b", 64), recordsFile} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := s.GC()
	if err != nil || !slices.Equal(removed, []string{filePrefix + strings.Repeat("b", 64)}) {
		t.Errorf("GC: %v %v; want the unused bundle removed", removed, err)
	}
	if files := bundleFiles(t, dir); !slices.Equal(files, []string{filePrefix + used}) {
		t.Errorf("left: %v", files)
	}
	if _, err := os.Stat(filepath.Join(dir, recordsFile)); err != nil {
		t.Errorf("GC removed the deployments file: %v", err)
	}
}

// TestConcurrentDeploys: deploys, redeploys and deletes of several names
// at once (pulls run outside the store's lock, GC runs after each) leave
// exactly the bundle files the remaining records use, each intact.
func TestConcurrentDeploys(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the wordcount function")
	}
	r := newRegistry(t, nil)
	refs := []string{r.push("wc:a", fnImage(t, "a")), r.push("wc:b", fnImage(t, "b")), r.push("wc:c", fnImage(t, "c"))}
	dir := t.TempDir()
	s, _ := newStore(t, dir, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("f%d", i%3)
			for j := 0; j < 4; j++ {
				if _, err := s.Deploy(context.Background(), name, refs[(i+j)%len(refs)], []string{"x86"}); err != nil {
					errs <- err
				}
				if j == 2 && i%2 == 0 {
					if err := s.Delete(name); err != nil && !errors.Is(err, ErrNotDeployed) {
						errs <- err
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	used := map[string]bool{}
	for _, rec := range s.List() {
		x := rec.Archs["x86"]
		used[filePrefix+strings.TrimPrefix(x.Bundle.Digest, "sha256:")] = true
		checkBundle(t, s, x)
	}
	files := bundleFiles(t, dir)
	if len(files) != len(used) {
		t.Errorf("bundle files %v; want exactly those the records use %v", files, used)
	}
	for _, f := range files {
		if !used[f] {
			t.Errorf("bundle %s is used by no record", f)
		}
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, tmpPattern)); len(tmps) != 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
}
