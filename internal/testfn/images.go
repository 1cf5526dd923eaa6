package testfn

import (
	"archive/tar"
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one entry of a test image's layer.
type File struct {
	Path string // in the image; a leading "/" is dropped
	Mode int64  // permission bits; 0 means 0755 (dirs, files), 0777 (links)
	Data []byte // a regular file's contents
	Link string // when set, a symlink to Link
	Dir  bool   // a directory
}

// The PATH every test image sets, as Debian-based images do.
const imagePath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// BuildImage is a one-layer linux image for arch holding files (their
// parent folders are added), with cfg as its run config. It is
// deterministic: the same files and config give the same digest.
func BuildImage(t testing.TB, arch Arch, files []File, cfg v1.Config) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range withParents(files) {
		h := &tar.Header{Name: f.Path, Mode: f.Mode}
		switch {
		case f.Dir:
			h.Typeflag, h.Name = tar.TypeDir, f.Path+"/"
		case f.Link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Link
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	p := arch.Platform()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config = cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// withParents returns files sorted by path with a directory entry for
// every parent folder not listed, and default modes filled in.
func withParents(files []File) []File {
	byPath := map[string]File{}
	for _, f := range files {
		f.Path = strings.Trim(path.Clean("/"+f.Path), "/")
		if f.Mode == 0 {
			f.Mode = 0o755
			if f.Link != "" {
				f.Mode = 0o777
			}
		}
		byPath[f.Path] = f
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = File{Path: d, Dir: true, Mode: 0o755}
			}
		}
	}
	out := make([]File, 0, len(byPath))
	for _, f := range byPath {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Index is a multi-platform image index of imgs, each listed under the
// platform its config names.
func Index(t testing.TB, imgs ...v1.Image) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}}})
	}
	return idx
}

// HandlerPrefix is what testdata/handler sends before the echoed request
// body: the bytes 0..255.
func HandlerPrefix() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// OfWatchdogImage is an OpenFaaS image laid out as the golang-http
// template lays it out: of-watchdog and the handler in /home/app (the
// working directory), CMD ["./fwatchdog"], mode=http, fprocess=./handler.
// testdata/handler answers 201, X-Fn: yes and HandlerPrefix then the
// request body.
func OfWatchdogImage(t testing.TB, arch Arch) v1.Image {
	t.Helper()
	files := []File{
		{Path: "/home/app/fwatchdog", Data: WatchdogBinary(t, OfWatchdog, arch)},
		{Path: "/home/app/handler", Data: GoBinary(t, "handler", arch)},
		{Path: "/tmp", Dir: true, Mode: 0o1777}, // the watchdog's lock file
	}
	return BuildImage(t, arch, files, v1.Config{
		Cmd:        []string{"./fwatchdog"},
		Env:        []string{imagePath, "mode=http", "upstream_url=http://127.0.0.1:8082", "fprocess=./handler"},
		WorkingDir: "/home/app",
	})
}

// ClassicScript is the classic watchdog image's function: it echoes the
// request body, then "done".
const ClassicScript = "cat\necho done\n"

// BusyboxApplets are the applets the classic image links to busybox.
var BusyboxApplets = []string{"cat", "echo", "env", "ls", "sh", "sleep", "tr", "true", "wc"}

// ClassicWatchdogImage is the classic watchdog (x86) as classic
// Dockerfiles install it: /usr/bin/fwatchdog run as CMD ["fwatchdog"] (found
// in the image's PATH), forking "sh fn.sh" per request in /home/app, with
// busybox-static as /bin/sh and its applets; the response is the request
// body followed by "done\n". The classic watchdog splits fprocess on
// spaces, so the function is a script file rather than sh -c '...'.
func ClassicWatchdogImage(t testing.TB) v1.Image {
	t.Helper()
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("busybox-static missing (make deps installs it): %v", err)
	}
	files := []File{
		{Path: "/usr/bin/fwatchdog", Data: WatchdogBinary(t, ClassicWatchdog, AMD64)},
		{Path: "/bin/busybox", Data: busybox},
		{Path: "/home/app/fn.sh", Data: []byte(ClassicScript), Mode: 0o644},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
	}
	for _, a := range BusyboxApplets {
		files = append(files, File{Path: "/bin/" + a, Link: "busybox"})
	}
	return BuildImage(t, AMD64, files, v1.Config{
		Cmd:        []string{"fwatchdog"},
		Env:        []string{imagePath, "fprocess=sh fn.sh"},
		WorkingDir: "/home/app",
	})
}

// PythonScript is the python image's function: stdin upper-cased.
const PythonScript = "import sys\nprint(sys.stdin.read().upper())\n"

// PythonImage is Debian's python3 (the host's /usr/bin/python3.X, x86) with
// the shared libraries ldd lists, the dynamic loader and the few stdlib
// files starting it needs (encodings: the rest of its start-up modules are
// frozen into the binary), running PythonScript: the smallest image of a
// dynamically linked interpreter that works.
func PythonImage(t testing.TB) v1.Image {
	t.Helper()
	matches, _ := filepath.Glob("/usr/bin/python3.[0-9]*")
	var bin string
	for _, m := range matches {
		if !strings.HasSuffix(m, "-config") {
			bin = m
		}
	}
	if bin == "" {
		t.Skip("Debian's python3 missing (apt-get install python3)")
	}
	version := filepath.Base(bin) // python3.11
	files := []File{
		{Path: bin, Data: readHost(t, bin)},
		{Path: "/usr/bin/python3", Link: version},
		{Path: "/home/app/fn.py", Data: []byte(PythonScript), Mode: 0o644},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
	}
	for _, lib := range sharedLibs(t, bin) {
		files = append(files, File{Path: lib, Data: readHost(t, lib)})
	}
	for _, f := range []string{"__init__.py", "aliases.py", "utf_8.py"} {
		p := "/usr/lib/" + version + "/encodings/" + f
		files = append(files, File{Path: p, Data: readHost(t, p), Mode: 0o644})
	}
	return BuildImage(t, AMD64, files, v1.Config{
		Entrypoint: []string{"/usr/bin/python3", "/home/app/fn.py"},
		// PYTHONHOME: without the landmark os.py python guesses its prefix
		// and warns on stderr.
		Env:        []string{imagePath, "PYTHONHOME=/usr", "PYTHONDONTWRITEBYTECODE=1"},
		WorkingDir: "/home/app",
	})
}

// sharedLibs is what ldd lists for bin: the libraries and the loader, as
// absolute paths on the host.
func sharedLibs(t testing.TB, bin string) []string {
	t.Helper()
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", bin, err)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x...)"; vdso has no file.
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	return libs
}

// readHost reads a host file, following symlinks (the image gets the
// contents at the path the program asks for).
func readHost(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// UpperImage is a stdin -> stdout function for arch: testdata/upper, a
// static Go program writing its input upper-cased.
func UpperImage(t testing.TB, arch Arch) v1.Image {
	t.Helper()
	return BuildImage(t, arch, []File{{Path: "/usr/local/bin/upper", Data: GoBinary(t, "upper", arch)}},
		v1.Config{Entrypoint: []string{"/usr/local/bin/upper"}, Env: []string{imagePath}, WorkingDir: "/"})
}

// UpperIndex is UpperImage for linux/amd64 and linux/arm/v7 in one
// multi-platform index, as `docker buildx --platform` pushes it.
func UpperIndex(t testing.TB) v1.ImageIndex {
	t.Helper()
	return Index(t, UpperImage(t, AMD64), UpperImage(t, ARMv7))
}
