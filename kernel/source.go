package kernel

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strings"

	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/source"
)

// ErrChecksum means a source file does not hash to what its pin says.
var ErrChecksum = source.ErrChecksum

// ChecksumError names the file and both hashes.
type ChecksumError = source.ChecksumError

// Source is a located, verified kernel tarball.
type Source struct {
	Path   string
	SHA256 string
	Size   int64
	Series string
	Pinned bool // the hash was checked against a recipe or --sha256
	// Absent are the recipe's symbols that this series lacks (Recipe.Absent).
	Absent []string
	// Provenance says where the tarball came from, for the build manifest.
	Provenance map[string]string
}

// FetchOptions say where sources are kept and how strictly pins hold.
type FetchOptions struct {
	Cache  cache.Cache
	Locked bool // only the exact pin; no fallback to a newer version of the series
	Log    *slog.Logger
	Notice io.Writer // where a fallback notice goes (default stderr)
}

// Fetch resolves the recipe's pinned source (the cache, else apt or a
// download), verifies it, and returns its tarball.
func Fetch(ctx context.Context, r Recipe, o FetchOptions) (Source, error) {
	res, err := source.Resolve(ctx, r.Source, source.Options{CacheDir: o.Cache.Dir, Locked: o.Locked, Recipe: r.Path, Log: o.Log, Notice: o.Notice})
	if err != nil {
		return Source{}, fmt.Errorf("kernel %s: %w", r.Name, err)
	}
	fi, err := os.Stat(res.Tarball)
	if err != nil {
		return Source{}, fmt.Errorf("kernel source: %w", err)
	}
	return Source{Path: res.Tarball, SHA256: res.TarballSHA256, Size: fi.Size(), Series: r.Series, Pinned: !res.Fallback,
		Absent: r.Absent, Provenance: res.Provenance}, nil
}

// LocalSource takes any tarball given with --source. Its hash is recorded
// (and checked when want is non-empty); its series comes from its Makefile.
func LocalSource(path, want string) (Source, error) {
	sum, size, err := cache.FileSHA256(path)
	if err != nil {
		return Source{}, fmt.Errorf("kernel source: %w", err)
	}
	if want != "" && sum != want {
		return Source{}, &ChecksumError{Path: path, Want: want, Got: sum, Hint: "check --sha256 or the file"}
	}
	v, err := TarballVersion(path)
	if err != nil {
		return Source{}, err
	}
	return Source{Path: path, SHA256: sum, Size: size, Series: SeriesOf(v), Pinned: want != "",
		Provenance: map[string]string{"source.kind": "local", "source.path": path}}, nil
}

var makeVar = regexp.MustCompile(`^(VERSION|PATCHLEVEL|SUBLEVEL)\s*=\s*(\d*)\s*$`)

// MakefileVersion reads VERSION.PATCHLEVEL.SUBLEVEL from a kernel Makefile.
func MakefileVersion(r io.Reader) (string, error) {
	vals := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() && len(vals) < 3 {
		if m := makeVar.FindStringSubmatch(sc.Text()); m != nil {
			vals[m[1]] = m[2]
		}
	}
	if vals["VERSION"] == "" || vals["PATCHLEVEL"] == "" {
		return "", fmt.Errorf("not a kernel Makefile: no VERSION/PATCHLEVEL")
	}
	v := vals["VERSION"] + "." + vals["PATCHLEVEL"]
	if vals["SUBLEVEL"] != "" {
		v += "." + vals["SUBLEVEL"]
	}
	return v, nil
}

// TarballVersion reads the kernel version from the top-level Makefile inside
// a tarball, without unpacking the rest.
func TarballVersion(path string) (string, error) {
	// The top directory's name varies (linux-6.1.1, linux-source-6.1), so list
	// the first entry and extract only its Makefile.
	top, err := topDir(path)
	if err != nil {
		return "", err
	}
	out, err := exec.Command("tar", "-xOf", path, top+"/Makefile").Output()
	if err != nil {
		return "", fmt.Errorf("%s: no top-level Makefile (is this a kernel source tarball?): %w", path, err)
	}
	v, err := MakefileVersion(strings.NewReader(string(out)))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

func topDir(path string) (string, error) {
	cmd := exec.Command("tar", "-tf", path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("tar: %w", err)
	}
	first, rerr := bufio.NewReader(stdout).ReadString('\n')
	cmd.Process.Kill()
	cmd.Wait()
	if rerr != nil && first == "" {
		return "", fmt.Errorf("%s: not a readable tarball", path)
	}
	top, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(first), "./"), "/")
	if top == "" {
		return "", fmt.Errorf("%s: empty tarball", path)
	}
	return top, nil
}
