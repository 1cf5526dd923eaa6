package source

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/internal/apt"
	"github.com/microfaas/microfaas/internal/cache"
)

// archive is a real signed Debian archive in a folder: packages built with
// dpkg-deb, indexes written by apt-ftparchive, the Release file signed with
// a throwaway key that apt then checks, as it checks Debian's.
type archive struct {
	t       *testing.T
	root    string
	gnupg   string
	keyring string
	arch    string
	debs    map[string]string // version -> .deb path (outside the pool)
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s missing: make deps installs it", tool)
			}
			t.Skipf("%s missing (make deps installs it)", tool)
		}
	}
}

func run(t *testing.T, dir string, env []string, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.String())
	}
	return out
}

func newArchive(t *testing.T) *archive {
	need(t, "gpg", "apt-get", "apt-ftparchive", "dpkg-deb")
	dir := t.TempDir()
	a := &archive{t: t, root: filepath.Join(dir, "repo"), gnupg: filepath.Join(dir, "gnupg"), keyring: filepath.Join(dir, "key.gpg"), debs: map[string]string{}}
	os.MkdirAll(a.gnupg, 0o700)
	env := []string{"GNUPGHOME=" + a.gnupg}
	run(t, "", env, "gpg", "--batch", "--passphrase", "", "--quick-gen-key", "MicroFaaS test archive <test@microfaas.invalid>", "ed25519", "sign", "never")
	key := run(t, "", env, "gpg", "--export")
	os.WriteFile(a.keyring, key, 0o644)
	a.arch = strings.TrimSpace(string(run(t, "", nil, "dpkg", "--print-architecture")))
	return a
}

// build makes a .deb of the fake source package at version, holding a
// tarball whose content names the version.
func (a *archive) build(version string) string {
	t := a.t
	root := filepath.Join(t.TempDir(), "pkg")
	os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755)
	os.MkdirAll(filepath.Join(root, "usr", "src"), 0o755)
	os.WriteFile(filepath.Join(root, "DEBIAN", "control"), []byte("Package: mf-fake-source\nVersion: "+version+
		"\nArchitecture: all\nMaintainer: MicroFaaS <test@microfaas.invalid>\nDescription: a fake source package for tests\n"), 0o644)
	os.WriteFile(filepath.Join(root, "usr", "src", "fake.tar.xz"), []byte("tarball of "+version+"\n"), 0o644)
	deb := filepath.Join(filepath.Dir(root), "mf-fake-source_"+version+"_all.deb")
	run(t, "", nil, "dpkg-deb", "--root-owner-group", "-Zxz", "--build", root, deb)
	a.debs[version] = deb
	return deb
}

// publish makes the archive hold exactly these versions, with fresh signed
// indexes (a distribution update).
func (a *archive) publish(versions ...string) {
	t := a.t
	os.RemoveAll(a.root)
	pool := filepath.Join(a.root, "pool", "main")
	bin := filepath.Join(a.root, "dists", "test", "main", "binary-"+a.arch)
	os.MkdirAll(pool, 0o755)
	os.MkdirAll(bin, 0o755)
	for _, v := range versions {
		b, _ := os.ReadFile(a.debs[v])
		os.WriteFile(filepath.Join(pool, filepath.Base(a.debs[v])), b, 0o644)
	}
	pk := run(t, a.root, nil, "apt-ftparchive", "packages", "pool")
	os.WriteFile(filepath.Join(bin, "Packages"), pk, 0o644)
	rel := run(t, a.root, nil, "apt-ftparchive",
		"-o", "APT::FTPArchive::Release::Suite=test", "-o", "APT::FTPArchive::Release::Codename=test",
		"-o", "APT::FTPArchive::Release::Components=main", "-o", "APT::FTPArchive::Release::Architectures="+a.arch,
		"release", "dists/test")
	os.WriteFile(filepath.Join(a.root, "dists", "test", "Release"), rel, 0o644)
	run(t, filepath.Join(a.root, "dists", "test"), []string{"GNUPGHOME=" + a.gnupg}, "gpg", "--batch", "--yes", "--clearsign", "-o", "InRelease", "Release")
}

func (a *archive) pin(version string) Pin {
	sum, _, err := cache.FileSHA256(a.debs[version])
	if err != nil {
		a.t.Fatal(err)
	}
	return Pin{Debian: &Debian{Package: "mf-fake-source", Version: version, SHA256: sum, File: "usr/src/fake.tar.xz",
		Fallback: `^1\.0-`, Archives: []apt.Archive{{URI: "file://" + a.root, Suites: []string{"test"}, Keyring: a.keyring}}}}
}

// TestResolveDistributionUpdate simulates Debian replacing the pinned
// version: the default build proceeds with the newest verified version of
// the series and one notice; --locked fails naming both versions.
func TestResolveDistributionUpdate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and signs a local apt archive")
	}
	a := newArchive(t)
	a.build("1.0-1")
	a.build("1.0-2")
	a.build("2.0-1") // another series: never a fallback
	ctx := context.Background()
	const recipe = "configs/kernel/fake/recipe.yaml"

	// The pin is published: it is taken exactly, no notice.
	a.publish("1.0-1", "1.0-2", "2.0-1")
	var notice bytes.Buffer
	res, err := Resolve(ctx, a.pin("1.0-1"), Options{CacheDir: t.TempDir(), Recipe: recipe, Notice: &notice})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(res.Tarball); string(b) != "tarball of 1.0-1\n" || res.Fallback || res.Version != "1.0-1" || notice.Len() != 0 {
		t.Fatalf("pinned: tarball %q, result %+v, notice %q", b, res, notice.String())
	}

	// The distribution update: 1.0-1 is gone, 1.0-2 (and 2.0-1) remain.
	a.publish("1.0-2", "2.0-1")
	newSum, _, _ := cache.FileSHA256(a.debs["1.0-2"])
	notice.Reset()
	res, err = Resolve(ctx, a.pin("1.0-1"), Options{CacheDir: t.TempDir(), Recipe: recipe, Notice: &notice})
	if err != nil {
		t.Fatalf("default build after the update: %v", err)
	}
	if b, _ := os.ReadFile(res.Tarball); string(b) != "tarball of 1.0-2\n" || !res.Fallback || res.Version != "1.0-2" {
		t.Fatalf("fallback: tarball %q, result %+v", b, res)
	}
	for _, want := range []string{"1.0-1", "1.0-2", newSum, recipe, "--locked"} {
		if !strings.Contains(notice.String(), want) {
			t.Errorf("notice does not name %q:\n%s", want, notice.String())
		}
	}
	if strings.Count(notice.String(), "notice:") != 1 {
		t.Errorf("want exactly one notice:\n%s", notice.String())
	}
	if res.Provenance["source.version"] != "1.0-2" || res.Provenance["source.fallback"] == "" || res.Provenance["source.deb.sha256"] != newSum {
		t.Errorf("provenance = %v", res.Provenance)
	}

	// --locked refuses, naming the pin and what the archive has.
	_, err = Resolve(ctx, a.pin("1.0-1"), Options{CacheDir: t.TempDir(), Recipe: recipe, Locked: true, Notice: &notice})
	var gone *PinGoneError
	if !errors.Is(err, ErrPinUnavailable) || !errors.As(err, &gone) {
		t.Fatalf("locked: err = %v, want ErrPinUnavailable", err)
	}
	for _, want := range []string{"1.0-1", "1.0-2", newSum, recipe} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("locked error does not name %q:\n%v", want, err)
		}
	}
}

// TestResolveRefusesUnverified: a tampered index fails apt's signature
// check, and a pin whose hash disagrees with the signed index is refused.
func TestResolveRefusesUnverified(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and signs a local apt archive")
	}
	a := newArchive(t)
	a.build("1.0-1")
	ctx := context.Background()

	a.publish("1.0-1")
	bad := a.pin("1.0-1")
	bad.Debian.SHA256 = strings.Repeat("0", 64)
	if _, err := Resolve(ctx, bad, Options{CacheDir: t.TempDir(), Notice: os.Stderr}); !errors.Is(err, ErrChecksum) {
		t.Fatalf("wrong pin: err = %v, want ErrChecksum", err)
	}

	// Change the index after signing: apt must refuse the whole suite.
	pk := filepath.Join(a.root, "dists", "test", "main", "binary-"+a.arch, "Packages")
	b, _ := os.ReadFile(pk)
	os.WriteFile(pk, append(b, []byte("\n")...), 0o644)
	if _, err := Resolve(ctx, a.pin("1.0-1"), Options{CacheDir: t.TempDir()}); err == nil {
		t.Fatal("a tampered index was accepted")
	} else {
		t.Logf("tampered index: %v", err)
	}
}
