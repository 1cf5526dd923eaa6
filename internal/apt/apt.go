// Package apt runs Debian's apt against a private configuration: a sources
// list, state and cache of its own under a folder of ours, with an archive
// keyring checking the signatures. mfbuild fetches pinned packages this way
// without touching (or depending on) the system's apt sources: bullseye's
// linux-source-5.10 builds on a bookworm host, and nothing is installed.
//
// apt checks each index against the archive's signed Release file and each
// downloaded file against the index, so a file this package returns is what
// the archive published; callers still compare it with their own pin.
package apt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/microfaas/microfaas/internal/cache"
)

// DebianKeyring is Debian's archive keyring (package debian-archive-keyring);
// on bookworm it holds the bullseye and bookworm signing keys.
const DebianKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// Archive is one entry of the private sources list.
type Archive struct {
	URI        string   `yaml:"uri"`
	Suites     []string `yaml:"suites"`
	Components []string `yaml:"components,omitempty"` // default: main
	// Keyring checks the suites' signatures; default DebianKeyring.
	Keyring string `yaml:"keyring,omitempty"`
}

func (a Archive) lines() string {
	comps := a.Components
	if len(comps) == 0 {
		comps = []string{"main"}
	}
	key := a.Keyring
	if key == "" {
		key = DebianKeyring
	}
	var b strings.Builder
	for _, s := range a.Suites {
		for _, typ := range []string{"deb", "deb-src"} {
			fmt.Fprintf(&b, "%s [signed-by=%s] %s %s %s\n", typ, key, a.URI, s, strings.Join(comps, " "))
		}
	}
	return b.String()
}

// ErrNotFound means the archives hold no such package or version.
var ErrNotFound = errors.New("not in the archive")

// Apt is a private apt setup for a set of archives.
type Apt struct {
	dir      string
	archives []Archive
	once     sync.Once
	upErr    error
}

// New prepares a private apt under root (a folder per set of archives, so
// recipes naming different archives never share an index).
func New(root string, archives []Archive) (*Apt, error) {
	if len(archives) == 0 {
		return nil, fmt.Errorf("apt: no archive given: a Debian recipe names at least one (uri, suites)")
	}
	var list strings.Builder
	for _, a := range archives {
		if a.URI == "" || len(a.Suites) == 0 {
			return nil, fmt.Errorf("apt: archive %q needs a uri and at least one suite", a.URI)
		}
		list.WriteString(a.lines())
	}
	dir := filepath.Join(root, cache.BytesSHA256([]byte(list.String()))[:16])
	for _, d := range []string{"state/lists/partial", "cache/archives/partial", "parts", "prefs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("apt: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "sources.list"), []byte(list.String()), 0o644); err != nil {
		return nil, fmt.Errorf("apt: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "status"), nil, 0o644); err != nil {
		return nil, fmt.Errorf("apt: %w", err)
	}
	return &Apt{dir: dir, archives: archives}, nil
}

// options point apt at the private folder. The system's apt.conf.d stays in
// effect (its proxy and mirror settings are this machine's way out), its
// sources, preferences and dpkg status do not.
func (a *Apt) options() []string {
	o := func(k, v string) []string { return []string{"-o", k + "=" + v} }
	var args []string
	for _, kv := range [][2]string{
		{"Dir::Etc::SourceList", filepath.Join(a.dir, "sources.list")},
		{"Dir::Etc::SourceParts", filepath.Join(a.dir, "parts")},
		{"Dir::Etc::Preferences", filepath.Join(a.dir, "prefs", "none")},
		{"Dir::Etc::PreferencesParts", filepath.Join(a.dir, "prefs")},
		{"Dir::State", filepath.Join(a.dir, "state")},
		{"Dir::State::status", filepath.Join(a.dir, "status")},
		{"Dir::Cache", filepath.Join(a.dir, "cache")},
		{"Acquire::Languages", "none"},
		// Only the package and source indexes: no Contents, no DEP-11.
		{"Acquire::IndexTargets::deb::DEP-11::DefaultEnabled", "false"},
		{"Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled", "false"},
		{"Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled", "false"},
		{"Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled", "false"},
		{"Acquire::IndexTargets::deb-src::Contents-dsc::DefaultEnabled", "false"},
		{"APT::Get::List-Cleanup", "false"},
	} {
		args = append(args, o(kv[0], kv[1])...)
	}
	if os.Geteuid() == 0 {
		// apt drops to _apt for downloads, which cannot write our folders.
		args = append(args, o("APT::Sandbox::User", "root")...)
	}
	return args
}

func (a *Apt) run(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, append(a.options(), args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, lastLines(stderr.String(), 4))
	}
	return out, nil
}

// Update fetches the archives' signed indexes (once per Apt). An index that
// fails its signature check is an error, never silently used.
func (a *Apt) Update(ctx context.Context) error {
	a.once.Do(func() {
		out, err := a.run(ctx, "", "apt-get", "update", "-q")
		if err != nil {
			a.upErr = fmt.Errorf("apt update of %s: %w", a.describe(), err)
			return
		}
		// apt-get update exits 0 when a suite cannot be fetched (only W: lines).
		if bytes.Contains(out, []byte("Err:")) {
			a.upErr = fmt.Errorf("apt update of %s failed for some suites:\n%s", a.describe(), grepLines(string(out), "Err:"))
		}
	})
	return a.upErr
}

func (a *Apt) describe() string {
	var s []string
	for _, ar := range a.archives {
		s = append(s, ar.URI+" "+strings.Join(ar.Suites, ","))
	}
	return strings.Join(s, "; ")
}

// Package is one version of a binary package, as the signed index lists it.
type Package struct {
	Name, Version, SHA256, Filename string
	Size                            int64
}

// Versions lists every version of a binary package the archives publish.
func (a *Apt) Versions(ctx context.Context, name string) ([]Package, error) {
	if err := a.Update(ctx); err != nil {
		return nil, err
	}
	out, err := a.run(ctx, "", "apt-cache", "show", name)
	if err != nil {
		if strings.Contains(err.Error(), "No packages found") || strings.Contains(err.Error(), "Unable to locate") {
			return nil, fmt.Errorf("package %s: %w", name, ErrNotFound)
		}
		return nil, err
	}
	var pkgs []Package
	seen := map[string]bool{}
	for _, st := range ParseStanzas(bytes.NewReader(out)) {
		p := Package{Name: st["Package"], Version: st["Version"], SHA256: st["SHA256"], Filename: st["Filename"]}
		fmt.Sscan(st["Size"], &p.Size)
		if p.Name != name || p.Version == "" || seen[p.Version] {
			continue
		}
		seen[p.Version] = true
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("package %s: %w", name, ErrNotFound)
	}
	SortNewestFirst(pkgs, func(p Package) string { return p.Version })
	return pkgs, nil
}

// Download fetches name=version into dir and returns the file's path. apt
// checks it against the signed index.
func (a *Apt) Download(ctx context.Context, name, version, dir string) (string, error) {
	if err := a.Update(ctx); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	before, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if _, err := a.run(ctx, dir, "apt-get", "download", "-q", name+"="+version); err != nil {
		return "", err
	}
	after, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	for _, p := range after {
		if !contains(before, p) && strings.HasPrefix(filepath.Base(p), name+"_") {
			return p, nil
		}
	}
	return "", fmt.Errorf("apt-get download %s=%s wrote no .deb in %s", name, version, dir)
}

// Source is one version of a source package: its files and their hashes
// (Checksums-Sha256 of the signed Sources index).
type Source struct {
	Name, Version string
	Files         map[string]string // file name -> sha256
}

// SourceVersions lists every version of a source package the archives publish.
func (a *Apt) SourceVersions(ctx context.Context, name string) ([]Source, error) {
	if err := a.Update(ctx); err != nil {
		return nil, err
	}
	out, err := a.run(ctx, "", "apt-cache", "showsrc", name)
	if err != nil {
		if strings.Contains(err.Error(), "Unable to find") || strings.Contains(err.Error(), "No packages found") {
			return nil, fmt.Errorf("source package %s: %w", name, ErrNotFound)
		}
		return nil, err
	}
	var srcs []Source
	seen := map[string]bool{}
	for _, st := range ParseStanzas(bytes.NewReader(out)) {
		if st["Package"] != name || st["Version"] == "" || seen[st["Version"]] {
			continue
		}
		seen[st["Version"]] = true
		s := Source{Name: name, Version: st["Version"], Files: map[string]string{}}
		for _, line := range strings.Split(st["Checksums-Sha256"], "\n") {
			f := strings.Fields(line)
			if len(f) == 3 {
				s.Files[f[2]] = f[0]
			}
		}
		srcs = append(srcs, s)
	}
	if len(srcs) == 0 {
		return nil, fmt.Errorf("source package %s: %w", name, ErrNotFound)
	}
	SortNewestFirst(srcs, func(s Source) string { return s.Version })
	return srcs, nil
}

// DownloadSource fetches the files of name=version into dir (the .dsc and its
// tarballs, not unpacked). apt checks each against the signed index.
func (a *Apt) DownloadSource(ctx context.Context, name, version, dir string) error {
	if err := a.Update(ctx); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	_, err := a.run(ctx, dir, "apt-get", "source", "-q", "--download-only", name+"="+version)
	return err
}

// ParseStanzas reads RFC 822-style control stanzas (apt-cache show/showsrc
// output). Continuation lines are joined with newlines, without their
// leading space.
func ParseStanzas(r io.Reader) []map[string]string {
	var out []map[string]string
	cur := map[string]string{}
	last := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	flush := func() {
		if len(cur) > 0 {
			out = append(out, cur)
		}
		cur, last = map[string]string{}, ""
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				if cur[last] != "" {
					cur[last] += "\n"
				}
				cur[last] += strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = k
			cur[k] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}

// SortNewestFirst orders items by Debian version, newest first.
func SortNewestFirst[T any](items []T, version func(T) string) {
	sort.SliceStable(items, func(i, j int) bool { return CompareVersions(version(items[i]), version(items[j])) > 0 })
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func grepLines(s, prefix string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
