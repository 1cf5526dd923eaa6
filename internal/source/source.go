// Package source resolves a recipe's pinned source by provenance: a Debian
// binary package holding a tarball (linux-source-6.1), a Debian source
// package (u-boot), or an upstream tarball by URL. Every file is checked
// against the pin's SHA-256 before use and kept in the cache, so a later
// build needs no network.
//
// Distribution archives move: Debian replaces a package version by the next
// within days. When the pinned version is gone, a default build takes the
// newest version of the same series that apt verifies against the signed
// index, prints one notice (old pin, new version, new hash, how to update
// the pin), and records what it used. A locked build (release builds,
// mfbuild --locked) refuses anything but the exact pin.
package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/microfaas/microfaas/internal/apt"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/command"
)

// ErrChecksum means a file does not hash to what its pin says: it is
// corrupt, truncated, or not the file the recipe names.
var ErrChecksum = errors.New("source checksum mismatch")

// ChecksumError names the file and both hashes.
type ChecksumError struct {
	Path, Want, Got, Hint string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("%v: %s\n  expected sha256 %s\n  actual   sha256 %s\n  the file is corrupt or not the pinned release: delete it and build again (%s)",
		ErrChecksum, e.Path, e.Want, e.Got, e.Hint)
}

func (e *ChecksumError) Unwrap() error { return ErrChecksum }

// ErrPinUnavailable means the pinned version is no longer in the archive.
var ErrPinUnavailable = errors.New("pinned source version is no longer in the archive")

// PinGoneError names the pin, the recipe and what the archive has instead.
type PinGoneError struct {
	Recipe           string // the recipe file
	Package, Pinned  string
	Newest, NewestSH string // empty when nothing of the series is left
	Locked           bool
}

func (e *PinGoneError) Error() string {
	if e.Newest == "" {
		return fmt.Sprintf("%v: %s %s (pinned in %s), and no other version of its series is published: "+
			"point the recipe at an archive that still has it (e.g. a snapshot.debian.org URI)", ErrPinUnavailable, e.Package, e.Pinned, e.Recipe)
	}
	if e.Locked {
		return fmt.Sprintf("%v: %s %s (pinned in %s); the archive's newest of the series is %s (sha256 %s).\n"+
			"  --locked builds only the exact pin: update version and sha256 in %s to these, or build without --locked",
			ErrPinUnavailable, e.Package, e.Pinned, e.Recipe, e.Newest, e.NewestSH, e.Recipe)
	}
	return fmt.Sprintf("%v: %s %s", ErrPinUnavailable, e.Package, e.Pinned)
}

func (e *PinGoneError) Unwrap() error { return ErrPinUnavailable }

// Debian pins a tarball shipped inside a Debian binary package.
type Debian struct {
	Package string `yaml:"package"`
	Version string `yaml:"version"`
	// SHA256 is the .deb's, as in the archive's signed Packages index
	// (apt-cache show PACKAGE=VERSION).
	SHA256 string `yaml:"sha256"`
	// File is the tarball's path inside the package.
	File     string        `yaml:"file"`
	Archives []apt.Archive `yaml:"archives"`
	// Fallback matches the versions a default build may take when the pin is
	// gone: the same series (a regular expression on the Debian version).
	Fallback string `yaml:"fallback"`
}

// DebianSource pins a Debian source package: its upstream (.orig) and
// packaging (.debian) tarballs.
type DebianSource struct {
	Package  string        `yaml:"package"`
	Version  string        `yaml:"version"`
	Files    []File        `yaml:"files"`
	Archives []apt.Archive `yaml:"archives"`
	Fallback string        `yaml:"fallback"`
}

// File is one file of a source package and its SHA-256 (Checksums-Sha256 of
// the .dsc and of the signed Sources index).
type File struct {
	Name   string `yaml:"name"`
	SHA256 string `yaml:"sha256"`
}

// Upstream pins a tarball by URL.
type Upstream struct {
	URL    string `yaml:"url"`
	SHA256 string `yaml:"sha256"`
}

// Pin is a recipe's source: exactly one of its fields is set.
type Pin struct {
	Debian       *Debian       `yaml:"debian,omitempty"`
	DebianSource *DebianSource `yaml:"debian_source,omitempty"`
	Upstream     *Upstream     `yaml:"upstream,omitempty"`
}

// Validate checks that exactly one kind of source is pinned, with its hashes.
func (p Pin) Validate() error {
	n := 0
	hex := regexp.MustCompile(`^[0-9a-f]{64}$`)
	if d := p.Debian; d != nil {
		n++
		if d.Package == "" || d.Version == "" || d.File == "" || len(d.Archives) == 0 {
			return fmt.Errorf("debian source needs package, version, file and archives")
		}
		if !hex.MatchString(d.SHA256) {
			return fmt.Errorf("debian source %s: sha256 %q is not a SHA-256 in hex", d.Package, d.SHA256)
		}
	}
	if d := p.DebianSource; d != nil {
		n++
		if d.Package == "" || d.Version == "" || len(d.Files) == 0 || len(d.Archives) == 0 {
			return fmt.Errorf("debian_source needs package, version, files and archives")
		}
		for _, f := range d.Files {
			if !hex.MatchString(f.SHA256) {
				return fmt.Errorf("debian_source %s: file %s: sha256 %q is not a SHA-256 in hex", d.Package, f.Name, f.SHA256)
			}
		}
	}
	if u := p.Upstream; u != nil {
		n++
		if u.URL == "" || !hex.MatchString(u.SHA256) {
			return fmt.Errorf("upstream source needs a url and a sha256 in hex")
		}
	}
	if n != 1 {
		return fmt.Errorf("a source pins exactly one of debian, debian_source, upstream (found %d)", n)
	}
	for _, re := range []string{fallbackOf(p)} {
		if _, err := regexp.Compile(re); err != nil {
			return fmt.Errorf("fallback %q: %w", re, err)
		}
	}
	return nil
}

func fallbackOf(p Pin) string {
	switch {
	case p.Debian != nil:
		return p.Debian.Fallback
	case p.DebianSource != nil:
		return p.DebianSource.Fallback
	}
	return ""
}

// Options say where files go and how strict resolution is.
type Options struct {
	CacheDir string // the build cache: sources/ and apt/ live under it
	Locked   bool   // refuse anything but the exact pin
	Recipe   string // the recipe file, named in notices and errors
	Log      *slog.Logger
	// Notice receives the one-paragraph notice when a fallback is taken
	// (default os.Stderr).
	Notice io.Writer
}

// Resolved is a verified source ready to unpack.
type Resolved struct {
	// Files are the verified files by name (for Debian: the extracted
	// tarball, named by its base name; for sources: each file of the pin).
	Files map[string]string
	// Tarball is the main tarball (Debian, Upstream: the only one).
	Tarball string
	// TarballSHA256 is the tarball's hash: what a build's cache key uses.
	TarballSHA256 string
	// Version is the Debian version used ("" for upstream).
	Version string
	// Fallback is true when the pin was gone and a newer version was taken.
	Fallback bool
	// Provenance is what the build manifest records.
	Provenance map[string]string
}

// Resolve fetches (or finds in the cache) and verifies the pinned source.
func Resolve(ctx context.Context, p Pin, o Options) (Resolved, error) {
	if err := p.Validate(); err != nil {
		return Resolved{}, fmt.Errorf("%s: %w", o.Recipe, err)
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Notice == nil {
		o.Notice = os.Stderr
	}
	switch {
	case p.Debian != nil:
		return resolveDebian(ctx, *p.Debian, o)
	case p.DebianSource != nil:
		return resolveDebianSource(ctx, *p.DebianSource, o)
	default:
		return resolveUpstream(ctx, *p.Upstream, o)
	}
}

func (o Options) sourcesDir(parts ...string) string {
	return filepath.Join(append([]string{o.CacheDir, "sources"}, parts...)...)
}

func (o Options) apt(archives []apt.Archive) (*apt.Apt, error) {
	return apt.New(filepath.Join(o.CacheDir, "apt"), archives)
}

func resolveDebian(ctx context.Context, d Debian, o Options) (Resolved, error) {
	version, sha := d.Version, d.SHA256
	fallback := false
	deb := o.sourcesDir("debian", d.Package+"_"+version+".deb")
	if !verified(deb, sha) {
		a, err := o.apt(d.Archives)
		if err != nil {
			return Resolved{}, err
		}
		pkgs, err := a.Versions(ctx, d.Package)
		if err != nil {
			return Resolved{}, fmt.Errorf("%s: %w; check the recipe's archives and this machine's network", o.Recipe, err)
		}
		var found *apt.Package
		for i := range pkgs {
			if pkgs[i].Version == d.Version {
				found = &pkgs[i]
			}
		}
		if found == nil {
			newest, err := newestOfSeries(pkgs, d.Fallback, func(p apt.Package) string { return p.Version })
			gone := &PinGoneError{Recipe: o.Recipe, Package: d.Package, Pinned: d.Version, Locked: o.Locked}
			if err == nil {
				gone.Newest, gone.NewestSH = newest.Version, newest.SHA256
			}
			if o.Locked || err != nil {
				return Resolved{}, gone
			}
			version, sha, fallback = newest.Version, newest.SHA256, true
			deb = o.sourcesDir("debian", d.Package+"_"+version+".deb")
			notice(o, d.Package, d.Version, version, "sha256: "+sha)
		} else if found.SHA256 != d.SHA256 {
			// The archive's signed index disagrees with the pin: never build it.
			return Resolved{}, &ChecksumError{Path: d.Package + "=" + d.Version + " in the archive index", Want: d.SHA256, Got: found.SHA256,
				Hint: "the recipe's sha256 is wrong, or the archive is not the one the pin came from"}
		}
		if !verified(deb, sha) {
			tmp, err := os.MkdirTemp(filepath.Dir(mkdirs(deb)), ".dl-")
			if err != nil {
				return Resolved{}, err
			}
			defer os.RemoveAll(tmp)
			step := o.Log.With("package", d.Package, "version", version)
			step.Info("fetching Debian package")
			got, err := a.Download(ctx, d.Package, version, tmp)
			if err != nil {
				return Resolved{}, fmt.Errorf("%s: %w", o.Recipe, err)
			}
			if err := checkFile(got, sha, "apt verified it against the index, so the pin and the archive disagree"); err != nil {
				return Resolved{}, err
			}
			if err := os.Rename(got, deb); err != nil {
				return Resolved{}, err
			}
		}
	}
	// The tarball, extracted once next to its .deb.
	tarball := o.sourcesDir("debian", d.Package+"_"+version, filepath.Base(d.File))
	if _, err := os.Stat(tarball); err != nil {
		if err := extractFromDeb(ctx, deb, d.File, tarball); err != nil {
			return Resolved{}, err
		}
	}
	tsum, _, err := cache.FileSHA256(tarball)
	if err != nil {
		return Resolved{}, err
	}
	prov := map[string]string{
		"source.kind":       "debian",
		"source.package":    d.Package,
		"source.version":    version,
		"source.deb.sha256": sha,
		"source.pin":        d.Package + "=" + d.Version,
	}
	if fallback {
		prov["source.fallback"] = "pinned " + d.Version + " is gone from the archive; used " + version
	}
	return Resolved{Files: map[string]string{filepath.Base(tarball): tarball}, Tarball: tarball, TarballSHA256: tsum,
		Version: version, Fallback: fallback, Provenance: prov}, nil
}

func resolveDebianSource(ctx context.Context, d DebianSource, o Options) (Resolved, error) {
	version := d.Version
	want := map[string]string{}
	for _, f := range d.Files {
		want[f.Name] = f.SHA256
	}
	dir := o.sourcesDir("debian-source", d.Package+"_"+version)
	fallback := false
	if !allVerified(dir, want) {
		a, err := o.apt(d.Archives)
		if err != nil {
			return Resolved{}, err
		}
		srcs, err := a.SourceVersions(ctx, d.Package)
		if err != nil {
			return Resolved{}, fmt.Errorf("%s: %w; check the recipe's archives and this machine's network", o.Recipe, err)
		}
		var found *apt.Source
		for i := range srcs {
			if srcs[i].Version == d.Version {
				found = &srcs[i]
			}
		}
		if found == nil {
			newest, err := newestOfSeries(srcs, d.Fallback, func(s apt.Source) string { return s.Version })
			gone := &PinGoneError{Recipe: o.Recipe, Package: d.Package, Pinned: d.Version, Locked: o.Locked}
			if err == nil {
				gone.Newest, gone.NewestSH = newest.Version, describeFiles(newest.Files)
			}
			if o.Locked || err != nil {
				return Resolved{}, gone
			}
			// The new version's tarballs, as the signed index lists them.
			// Files that keep their name (the .orig) must keep their hash.
			next := map[string]string{}
			for name, sum := range newest.Files {
				if strings.HasSuffix(name, ".dsc") {
					continue
				}
				if old, ok := want[name]; ok && old != sum {
					return Resolved{}, &ChecksumError{Path: name + " of " + d.Package + " " + newest.Version, Want: old, Got: sum,
						Hint: "the upstream tarball changed under the same name: update the recipe by hand"}
				}
				next[name] = sum
			}
			version, want, fallback = newest.Version, next, true
			dir = o.sourcesDir("debian-source", d.Package+"_"+version)
			notice(o, d.Package, d.Version, version, describeFiles(next))
		} else {
			for name, sum := range want {
				if found.Files[name] != sum {
					return Resolved{}, &ChecksumError{Path: name + " in the archive index", Want: sum, Got: found.Files[name],
						Hint: "the recipe's sha256 is wrong, or the archive is not the one the pin came from"}
				}
			}
		}
		if !allVerified(dir, want) {
			tmp, err := os.MkdirTemp(filepath.Dir(mkdirs(dir)), ".dl-")
			if err != nil {
				return Resolved{}, err
			}
			defer os.RemoveAll(tmp)
			o.Log.Info("fetching Debian source package", "package", d.Package, "version", version)
			if err := a.DownloadSource(ctx, d.Package, version, tmp); err != nil {
				return Resolved{}, fmt.Errorf("%s: %w", o.Recipe, err)
			}
			for name, sum := range want {
				if err := checkFile(filepath.Join(tmp, name), sum, "apt verified it against the index, so the pin and the archive disagree"); err != nil {
					return Resolved{}, err
				}
			}
			os.RemoveAll(dir)
			if err := os.Rename(tmp, dir); err != nil {
				return Resolved{}, err
			}
		}
	}
	files := map[string]string{}
	prov := map[string]string{
		"source.kind":    "debian_source",
		"source.package": d.Package,
		"source.version": version,
		"source.pin":     d.Package + "=" + d.Version,
	}
	for name, sum := range want {
		files[name] = filepath.Join(dir, name)
		prov["source.file:"+name] = sum
	}
	if fallback {
		prov["source.fallback"] = "pinned " + d.Version + " is gone from the archive; used " + version
	}
	return Resolved{Files: files, Version: version, Fallback: fallback, Provenance: prov}, nil
}

func resolveUpstream(ctx context.Context, u Upstream, o Options) (Resolved, error) {
	path := o.sourcesDir("upstream", filepath.Base(u.URL))
	if !verified(path, u.SHA256) {
		if _, err := os.Stat(path); err == nil {
			if err := checkFile(path, u.SHA256, "delete it and build again"); err != nil {
				return Resolved{}, err
			}
		}
		if err := command.Download(ctx, u.URL, path); err != nil {
			return Resolved{}, fmt.Errorf("%s: %w; without network access to it, download the tarball elsewhere and build with --source", o.Recipe, err)
		}
		if err := checkFile(path, u.SHA256, "the download is corrupt or the URL serves another file"); err != nil {
			os.Remove(path)
			return Resolved{}, err
		}
	}
	return Resolved{Files: map[string]string{filepath.Base(path): path}, Tarball: path, TarballSHA256: u.SHA256,
		Provenance: map[string]string{"source.kind": "upstream", "source.url": u.URL, "source.pin": u.URL}}, nil
}

// newestOfSeries picks the newest version matching the fallback pattern.
func newestOfSeries[T any](items []T, pattern string, version func(T) string) (T, error) {
	var zero T
	if pattern == "" {
		return zero, fmt.Errorf("the recipe allows no fallback")
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return zero, err
	}
	var match []T
	for _, it := range items {
		if re.MatchString(version(it)) {
			match = append(match, it)
		}
	}
	if len(match) == 0 {
		return zero, fmt.Errorf("no version matches %s", pattern)
	}
	apt.SortNewestFirst(match, version)
	return match[0], nil
}

func notice(o Options, pkg, pinned, used, hashes string) {
	fmt.Fprintf(o.Notice, "notice: %s %s, pinned in %s, is no longer in the archive.\n"+
		"  building with the newest verified version of its series instead: %s (%s)\n"+
		"  to pin it, set version: %s and the sha256 above in %s (release builds use --locked, which refuses this)\n",
		pkg, pinned, o.Recipe, used, hashes, used, o.Recipe)
}

func describeFiles(files map[string]string) string {
	var names []string
	for n := range files {
		if !strings.HasSuffix(n, ".dsc") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, n+" sha256 "+files[n])
	}
	return strings.Join(parts, ", ")
}

func verified(path, want string) bool {
	sum, _, err := cache.FileSHA256(path)
	return err == nil && sum == want
}

func allVerified(dir string, want map[string]string) bool {
	for name, sum := range want {
		if !verified(filepath.Join(dir, name), sum) {
			return false
		}
	}
	return true
}

func checkFile(path, want, hint string) error {
	sum, _, err := cache.FileSHA256(path)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if sum != want {
		return &ChecksumError{Path: path, Want: want, Got: sum, Hint: hint}
	}
	return nil
}

func mkdirs(path string) string {
	os.MkdirAll(filepath.Dir(path), 0o755)
	return path
}

// extractFromDeb copies one file out of a .deb's data archive.
func extractFromDeb(ctx context.Context, deb, member, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".part"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	// dpkg-deb streams the data archive; tar picks the member.
	pipe := exec.CommandContext(ctx, "bash", "-c", `set -o pipefail; dpkg-deb --fsys-tarfile "$1" | tar -xO "./$2"`, "bash", deb, strings.TrimPrefix(member, "/"))
	pipe.Stdout = f
	var stderr strings.Builder
	pipe.Stderr = &stderr
	if err := pipe.Run(); err != nil {
		f.Close()
		return fmt.Errorf("extract %s from %s: %w: %s (is dpkg installed?)", member, deb, err, strings.TrimSpace(stderr.String()))
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
