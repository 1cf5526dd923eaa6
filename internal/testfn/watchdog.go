package testfn

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/microfaas/microfaas/internal/cache"
)

// Arch is a Go build target of a worker: the x86 workers run linux/amd64,
// the BeagleBones linux/arm/v7.
type Arch struct{ GOARCH, GOARM string }

var (
	AMD64 = Arch{GOARCH: "amd64"}
	ARMv7 = Arch{GOARCH: "arm", GOARM: "7"}
)

// String is "amd64" or "arm-v7", as used in cache names.
func (a Arch) String() string {
	if a.GOARM != "" {
		return a.GOARCH + "-v" + a.GOARM
	}
	return a.GOARCH
}

// Platform is the image platform of a.
func (a Arch) Platform() v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: a.GOARCH}
	if a.GOARM != "" {
		p.Variant = "v" + a.GOARM
	}
	return p
}

// Machine is the ELF machine of a's binaries.
func (a Arch) Machine() elf.Machine {
	if a.GOARCH == "arm" {
		return elf.EM_ARM
	}
	return elf.EM_X86_64
}

// Watchdog is an OpenFaaS watchdog pinned to one commit. Its tags lack the
// "v" Go needs, so the module version is a pseudo-version (commit time in
// UTC + hash).
type Watchdog struct {
	Name    string // repository name, and its folder in MICROFAAS_OPENFAAS_SRC
	Module  string
	Tag     string // the release tag on that commit
	Commit  string
	Version string // pseudo-version of Commit
}

// The pinned watchdogs: the newest releases when this was written.
var (
	OfWatchdog = Watchdog{Name: "of-watchdog", Module: "github.com/openfaas/of-watchdog", Tag: "0.11.6",
		Commit: "9bdadb1e8c68ae1016ac1a35906cd2acaa53169a", Version: "v0.0.0-20260513144341-9bdadb1e8c68"}
	ClassicWatchdog = Watchdog{Name: "classic-watchdog", Module: "github.com/openfaas/classic-watchdog", Tag: "0.3.9",
		Commit: "23db9142df2b43767336ed66acd3ad758cdfa96d", Version: "v0.0.0-20260327130904-23db9142df2b"}
)

// SourceEnv names a folder holding git clones of the watchdogs
// (DIR/of-watchdog, DIR/classic-watchdog; bare or not): the fallback when
// the Go module proxy does not serve the pinned versions.
const SourceEnv = "MICROFAAS_OPENFAAS_SRC"

// ErrNoWatchdogSource says neither the module proxy nor SourceEnv gave
// the watchdog's source.
var ErrNoWatchdogSource = errors.New("watchdog source not available")

// WatchdogBinary returns w built for arch (static, CGO_ENABLED=0). The
// binary is built once and kept in the user cache
// (~/.cache/microfaas/testbin/NAME-VERSION-ARCH). It skips the test when
// the source cannot be had.
func WatchdogBinary(t testing.TB, w Watchdog, arch Arch) []byte {
	t.Helper()
	b, err := BuildWatchdog(w, arch, cache.DefaultDir())
	if errors.Is(err, ErrNoWatchdogSource) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BuildWatchdog is WatchdogBinary's work, with the cache folder given.
// The source is the module at its pinned pseudo-version from the Go module
// proxy, else `git archive COMMIT` of the clone in $MICROFAAS_OPENFAAS_SRC.
func BuildWatchdog(w Watchdog, arch Arch, cacheDir string) ([]byte, error) {
	path := filepath.Join(cacheDir, "testbin", w.Name+"-"+w.Version+"-"+arch.String())
	if b, err := os.ReadFile(path); err == nil {
		return b, nil
	}
	src, err := os.MkdirTemp("", "watchdog-src-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(src)
	if err := watchdogSource(w, src); err != nil {
		return nil, err
	}
	// The module's own go.mod pins its dependencies; vendor/ (in the git
	// tree, not in module zips) spares the proxy.
	modFlag := "-mod=readonly"
	if _, err := os.Stat(filepath.Join(src, "vendor", "modules.txt")); err == nil {
		modFlag = "-mod=vendor"
	}
	out := filepath.Join(src, "fwatchdog.out")
	ldflags := fmt.Sprintf("-s -w -X main.Version=%s -X main.GitCommit=%s", w.Tag, w.Commit)
	cmd := exec.Command("go", "build", modFlag, "-trimpath", "-ldflags", ldflags, "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch.GOARCH, "GOARM="+arch.GOARM, "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s %s for %s: %v\n%s", w.Name, w.Version, arch, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	// tmp + rename: a concurrent test binary never reads half a file.
	tmp := path + fmt.Sprintf(".tmp%d", os.Getpid())
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return nil, err
	}
	return b, os.Rename(tmp, path)
}

// watchdogSource fills dir with w's source tree at its pinned commit.
func watchdogSource(w Watchdog, dir string) error {
	var dl struct{ Dir, Error string }
	cmd := exec.Command("go", "mod", "download", "-json", w.Module+"@"+w.Version)
	cmd.Dir = dir // outside any module
	b, _ := cmd.Output()
	if json.Unmarshal(b, &dl) == nil && dl.Error == "" && dl.Dir != "" {
		return exec.Command("cp", "-R", "--no-preserve=mode", dl.Dir+"/.", dir).Run()
	}
	proxyErr := dl.Error
	root := os.Getenv(SourceEnv)
	if root == "" {
		return fmt.Errorf("%w: %s@%s: the module proxy said %q; clone https://github.com/openfaas/%s into DIR/%s and set %s=DIR",
			ErrNoWatchdogSource, w.Module, w.Version, proxyErr, w.Name, w.Name, SourceEnv)
	}
	repo := filepath.Join(root, w.Name)
	archive := exec.Command("git", "-C", repo, "archive", "--format=tar", w.Commit)
	var tarball, stderr bytes.Buffer
	archive.Stdout, archive.Stderr = &tarball, &stderr
	if err := archive.Run(); err != nil {
		return fmt.Errorf("%w: git archive %s in %s: %v: %s", ErrNoWatchdogSource, w.Commit, repo, err, stderr.String())
	}
	untar := exec.Command("tar", "-x", "-C", dir)
	untar.Stdin = &tarball
	if b, err := untar.CombinedOutput(); err != nil {
		return fmt.Errorf("unpack %s source: %v: %s", w.Name, err, b)
	}
	return nil
}

// GoBinary builds the Go program in folder testdata/NAME of this package
// (a main package of this module) for arch, static, and returns it.
func GoBinary(t testing.TB, name string, arch Arch) []byte {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	out := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = filepath.Join(filepath.Dir(self), "testdata", name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch.GOARCH, "GOARM="+arch.GOARM)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build testdata/%s for %s: %v\n%s", name, arch, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
