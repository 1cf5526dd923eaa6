package testfn

import (
	"crypto/sha256"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
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

// Watchdog is an OpenFaaS watchdog pinned to one upstream commit. Its
// source is in the repository, unchanged, at third_party/NAME: the Go
// module proxy does not serve these repositories. The folder's README.md
// records the commit and every file's SHA-256.
type Watchdog struct {
	Name   string // upstream repository name, and its folder under third_party
	Tag    string // the release tag on Commit
	Commit string
}

// The pinned watchdogs: the newest releases when this was written.
var (
	OfWatchdog      = Watchdog{Name: "of-watchdog", Tag: "0.11.6", Commit: "9bdadb1e8c68ae1016ac1a35906cd2acaa53169a"}
	ClassicWatchdog = Watchdog{Name: "classic-watchdog", Tag: "0.3.9", Commit: "23db9142df2b43767336ed66acd3ad758cdfa96d"}
)

// ErrSourceModified says a third-party folder's files are not the ones its
// README.md records: upstream code was edited, added or removed.
var ErrSourceModified = errors.New("third-party source differs from the SHA-256 its README.md records")

// SourceDir is the folder holding w's source: third_party/NAME of this
// repository.
func SourceDir(w Watchdog) string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(self), "..", "..", "third_party", w.Name)
}

// WatchdogBinary returns w built for arch (static, CGO_ENABLED=0). The
// binary is built once and kept in the user cache
// (~/.cache/microfaas/testbin/NAME-KEY-ARCH).
func WatchdogBinary(t testing.TB, w Watchdog, arch Arch) []byte {
	t.Helper()
	b, err := BuildWatchdog(w, arch, cache.DefaultDir())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BuildWatchdog is WatchdogBinary's work, with the cache folder given. It
// checks the source against its recorded hashes, then builds it in its
// folder with the dependencies its go.mod and go.sum pin, from the Go
// module proxy. The cache key covers the recorded hashes, the Go version,
// the build settings and arch, so any change of them builds again.
func BuildWatchdog(w Watchdog, arch Arch, cacheDir string) ([]byte, error) {
	dir := SourceDir(w)
	manifest, err := CheckSource(dir)
	if err != nil {
		return nil, err
	}
	gover, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOVERSION: %w", err)
	}
	ldflags := fmt.Sprintf("-s -w -X main.Version=%s -X main.GitCommit=%s", w.Tag, w.Commit)
	key := sha256.Sum256([]byte(manifest + "\n" + strings.TrimSpace(string(gover)) + "\n" + ldflags + "\n" + arch.String()))
	path := filepath.Join(cacheDir, "testbin", fmt.Sprintf("%s-%x-%s", w.Name, key[:8], arch))
	if b, err := os.ReadFile(path); err == nil {
		return b, nil
	}

	tmpDir, err := os.MkdirTemp("", "watchdog-build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmpDir)
	out := filepath.Join(tmpDir, "fwatchdog")
	// -mod=readonly: go.sum is upstream's and must not change; -buildvcs=false:
	// the folder sits in our git checkout, whose state is not the watchdog's.
	cmd := exec.Command("go", "build", "-mod=readonly", "-buildvcs=false", "-trimpath", "-ldflags", ldflags, "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch.GOARCH, "GOARM="+arch.GOARM, "GOFLAGS=", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s %s for %s in %s (its dependencies come from the Go module proxy): %v\n%s", w.Name, w.Tag, arch, dir, err, b)
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

// hashLine is one line of sha256sum's output: "HEX  PATH".
var hashLine = regexp.MustCompile(`^([0-9a-f]{64})  (\S+)$`)

// RecordedHashes reads the file hashes that dir/README.md records (its
// lines in sha256sum's format), by path relative to dir.
func RecordedHashes(dir string) (map[string]string, error) {
	readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		return nil, err
	}
	rec := map[string]string{}
	for _, line := range strings.Split(string(readme), "\n") {
		if m := hashLine.FindStringSubmatch(line); m != nil {
			rec[m[2]] = m[1]
		}
	}
	if len(rec) == 0 {
		return nil, fmt.Errorf("%w: %s/README.md lists no file hashes (lines \"SHA256  PATH\")", ErrSourceModified, dir)
	}
	return rec, nil
}

// CheckSource compares every file under dir but README.md with the hashes
// README.md records, and returns the checked list (sorted "HEX  PATH"
// lines) for cache keys. A file edited, missing or not listed is
// ErrSourceModified.
func CheckSource(dir string) (string, error) {
	rec, err := RecordedHashes(dir)
	if err != nil {
		return "", err
	}
	var problems []string
	seen := map[string]bool{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "README.md" {
			return nil
		}
		seen[rel] = true
		want, ok := rec[rel]
		if !ok {
			problems = append(problems, rel+" is not listed")
			return nil
		}
		if !d.Type().IsRegular() {
			problems = append(problems, rel+" is not a regular file")
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if got := fmt.Sprintf("%x", sha256.Sum256(b)); got != want {
			problems = append(problems, fmt.Sprintf("%s has SHA-256 %s, recorded %s", rel, got, want))
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	var lines []string
	for rel, h := range rec {
		if !seen[rel] {
			problems = append(problems, rel+" is missing")
		}
		lines = append(lines, h+"  "+rel)
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return "", fmt.Errorf("%w: %s: %s; restore the upstream files (git checkout -- %s), or, moving to another upstream commit, update the list in its README.md",
			ErrSourceModified, dir, strings.Join(problems, "; "), dir)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n"), nil
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
