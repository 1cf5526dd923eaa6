package kernel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/command"
)

// ErrChecksum means a source tarball does not hash to what its recipe pins:
// it is corrupt, truncated, or not the file the recipe names.
var ErrChecksum = errors.New("kernel source checksum mismatch")

// ChecksumError names the file and both hashes.
type ChecksumError struct {
	Path, Want, Got, Hint string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("%v: %s\n  expected sha256 %s\n  actual   sha256 %s\n  the file is corrupt or not the pinned release: delete it and fetch it again (%s)",
		ErrChecksum, e.Path, e.Want, e.Got, e.Hint)
}

func (e *ChecksumError) Unwrap() error { return ErrChecksum }

// Source is a located, verified kernel tarball.
type Source struct {
	Path   string
	SHA256 string
	Size   int64
	Series string
	Pinned bool // the hash was checked against a recipe
}

// Fetch finds the recipe's tarball (local path, else the download cache,
// else downloads it) and verifies its hash.
func Fetch(ctx context.Context, r Recipe, c cache.Cache) (Source, error) {
	path := r.Local
	if path == "" || !exists(path) {
		if r.URL == "" {
			return Source{}, fmt.Errorf("kernel source %s not found: %s", r.Local, r.Hint)
		}
		path = filepath.Join(c.Dir, "downloads", filepath.Base(r.URL))
		if !exists(path) {
			if err := command.Download(ctx, r.URL, path); err != nil {
				return Source{}, fmt.Errorf("kernel %s: %w; %s", r.Version, err, r.Hint)
			}
		}
	}
	sum, size, err := cache.FileSHA256(path)
	if err != nil {
		return Source{}, fmt.Errorf("kernel source: %w", err)
	}
	if sum != r.SHA256 {
		return Source{}, &ChecksumError{Path: path, Want: r.SHA256, Got: sum, Hint: r.Hint}
	}
	return Source{Path: path, SHA256: sum, Size: size, Series: r.Series, Pinned: true}, nil
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
	return Source{Path: path, SHA256: sum, Size: size, Series: SeriesOf(v), Pinned: want != ""}, nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

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
