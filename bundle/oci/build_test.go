package oci

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/bundle"
)

// unpackBundle writes the bundle b into a fresh folder and returns it.
func unpackBundle(t *testing.T, b []byte) (string, bundle.Config) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := bundle.Unpack(bytes.NewReader(b), dir, bundle.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

// links lists the unpacked rootfs's symlinks (path -> target) and fails
// the test if any could point outside rootfs, read lexically as the
// kernel would from the worker's root.
func links(t *testing.T, dir string) map[string]string {
	t.Helper()
	root := filepath.Join(dir, bundle.RootName)
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = target
		if path.IsAbs(target) || strings.HasPrefix(path.Join(path.Dir(rel), target), "..") {
			t.Errorf("%s -> %s leaves the rootfs", rel, target)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBuildHostileImages: every hostile image of issue 18 goes through
// Build, the path run-time deploys take; each is refused, or rewritten so
// that its bundle, unpacked on a worker, stays inside its rootfs.
func TestBuildHostileImages(t *testing.T) {
	tests := []struct {
		name    string
		layers  [][]ent // lowest first
		wantErr error
		text    string                                              // in the error, when wantErr is set
		check   func(t *testing.T, dir string, l map[string]string) // on the unpacked bundle otherwise
	}{
		{name: "attack 1: a file below a link to /functions",
			layers:  [][]ent{{run, reg("l/aaa", "#!/bin/sh\necho attacker\n"), sym("l", "/functions")}},
			wantErr: bundle.ErrUnsafeImage, text: "l/aaa is below the symlink l -> /functions"},
		{name: "the link in an upper layer, the file in a lower one spelled differently",
			layers:  [][]ent{{run, reg("l/aaa", "evil")}, {sym("/l", "/functions")}},
			wantErr: bundle.ErrUnsafeImage, text: "l/aaa is below the symlink l"},
		{name: "entries through a symlinked parent, across layers",
			layers:  [][]ent{{run, sym("etc", "/functions")}, {reg("etc/passwd", "evil")}},
			wantErr: bundle.ErrUnsafeImage, text: "etc/passwd is below the symlink etc -> /functions"},
		{name: "a file below a file",
			layers:  [][]ent{{run, reg("f/g", "x"), reg("f", "y")}},
			wantErr: bundle.ErrUnsafeImage, text: "f/g is below the file f"},
		{name: ".. after a link climbs out of the rootfs",
			layers:  [][]ent{{run, sym("s", "."), sym("a", "s/s/../..")}},
			wantErr: bundle.ErrUnsafeImage, text: "symlink a -> s/s/../.. climbs out of the symlink s"},
		{name: "a whiteout of a path outside the image",
			layers: [][]ent{{reg("app/lower", "x")}, {run, reg("../../functions/.wh.aaa", "")}},
			text:   "unsafe tar path"},
		{name: "a hard link to nothing",
			layers:  [][]ent{{run, hard("app/x", "app/missing")}},
			wantErr: bundle.ErrUnsafeImage, text: "hard link app/x -> app/missing"},
		{name: "a hard link to a file outside the image",
			layers:  [][]ent{{run, hard("app/x", "/functions/aaa")}},
			wantErr: bundle.ErrUnsafeImage, text: "hard link app/x -> functions/aaa"},
		{name: "a hard link through a link",
			layers:  [][]ent{{run, sym("l", "/etc"), reg("etc/passwd", "root"), hard("app/p", "l/passwd")}},
			wantErr: bundle.ErrUnsafeImage, text: "hard link app/p -> l/passwd"},
		{name: "var -> / is rewritten to the rootfs's own root",
			layers: [][]ent{{run, sym("var", "/")}},
			check: func(t *testing.T, dir string, l map[string]string) {
				if l["var"] != "." {
					t.Errorf("var -> %q, want .", l["var"])
				}
			}},
		{name: "tmp -> /functions/x and links to other tenants stay in the rootfs",
			layers: [][]ent{{run, sym("tmp", "/functions/x"), sym("l", "/functions"), sym("a/b/up", "/../../../../functions/aaa"),
				sym("dev", "../../../dev"), reg("lib/ld.so", "ld"), sym("lib64/ld.so", "/lib/ld.so")}},
			check: func(t *testing.T, dir string, l map[string]string) {
				// dev -> ../../../dev is left out by mutate.Extract, which
				// drops relative links that climb above the image's root.
				want := map[string]string{"tmp": "functions/x", "l": "functions", "a/b/up": "../../functions/aaa", "lib64/ld.so": "../lib/ld.so"}
				if !reflect.DeepEqual(l, want) {
					t.Errorf("links %v, want %v", l, want)
				}
			}},
		{name: "a whiteout hides a directory a link replaces",
			layers: [][]ent{{run, dir("d"), reg("d/aaa", "lower")}, {sym("d", "/functions"), reg(".wh.d", "")}},
			check: func(t *testing.T, dir string, l map[string]string) {
				if l["d"] != "functions" {
					t.Errorf("d -> %q, want the rootfs's own functions", l["d"])
				}
			}},
		{name: "device nodes dropped, setuid and setgid cleared, hard links copied",
			layers: [][]ent{{run, {name: "dev/sda", typ: tar.TypeChar, mode: 0o666}, {name: "fifo", typ: tar.TypeFifo, mode: 0o666},
				{name: "app/su", typ: tar.TypeReg, mode: 0o4755, data: "su"}, {name: "app/sg", typ: tar.TypeDir, mode: 0o2775},
				hard("app/su2", "./app/su")}},
			check: func(t *testing.T, dir string, l map[string]string) {
				root := filepath.Join(dir, bundle.RootName)
				for _, n := range []string{"dev/sda", "fifo"} {
					if _, err := os.Lstat(filepath.Join(root, n)); err == nil {
						t.Errorf("%s is in the bundle", n)
					}
				}
				for n, want := range map[string]fs.FileMode{"app/su": 0o755, "app/sg": fs.ModeDir | 0o775, "app/su2": 0o755} {
					if fi, err := os.Lstat(filepath.Join(root, n)); err != nil || fi.Mode() != want {
						t.Errorf("%s: %v %v, want mode %v", n, fi.Mode(), err, want)
					}
				}
				if b, _ := os.ReadFile(filepath.Join(root, "app/su2")); string(b) != "su" {
					t.Errorf("hard link copy holds %q", b)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, _ := image(t, "amd64", "", tt.layers...)
			var b bytes.Buffer
			_, err := Build(img, elf.EM_X86_64, bundle.DefaultLimits, &b)
			if tt.text != "" {
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.text) {
					t.Fatalf("err = %v, want %v with %q", err, tt.wantErr, tt.text)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			dir, _ := unpackBundle(t, b.Bytes())
			tt.check(t, dir, links(t, dir))
		})
	}
}

// TestBuildBombs: limits on what one image may make Build read and hold.
// Each bomb is small compressed and large uncompressed; the refusal is
// ErrImageTooLarge, and memory stays far below the uncompressed size.
func TestBuildBombs(t *testing.T) {
	small := bundle.Limits{Stream: 8 << 20, Bytes: 4 << 20, Files: 100, FileBytes: 2 << 20}
	many := func(n int, e func(i int) ent) []ent {
		out := []ent{run}
		for i := 0; i < n; i++ {
			out = append(out, e(i))
		}
		return out
	}
	tests := []struct {
		name   string
		lim    bundle.Limits
		layers [][]ent
		text   string
	}{
		{"gzip of zeros over the stream limit", bundle.Limits{Stream: 8 << 20, Bytes: 16 << 20, Files: 100, FileBytes: 16 << 20},
			[][]ent{{run, zeros("app/bomb", 9<<20)}}, "more than 8388608 uncompressed bytes"},
		{"one 300 MiB file, default limits", bundle.DefaultLimits,
			[][]ent{{run, zeros("app/bomb", 300<<20)}}, "app/bomb is 314572800 bytes"},
		{"three 100 MiB files, default limits", bundle.DefaultLimits,
			[][]ent{many(3, func(i int) ent { return zeros("app/b"+string(rune('0'+i)), 100<<20) })}, "more than 268435456 bytes of files"},
		{"too many entries", small,
			[][]ent{many(200, func(i int) ent { return reg("app/f"+strings.Repeat("x", i), "") })}, "more than 100 entries"},
		{"one deep file implies too many directories", small,
			[][]ent{{run, reg(strings.Repeat("d/", 150)+"f", "")}}, "more than 100 entries with the directories they need"},
		{"hard links multiply one file", small,
			[][]ent{many(10, func(i int) ent {
				if i == 0 {
					return zeros("app/one", 1<<20)
				}
				return hard("app/h"+string(rune('0'+i)), "app/one")
			})}, "with hard links copied"},
		{"overwritten layers past the stream limit", small,
			[][]ent{{run, zeros("app/big", 2<<20)}, {zeros("app/big", 2<<20)}, {zeros("app/big", 2<<20)}, {zeros("app/big", 2<<20)}},
			"more than 8388608 uncompressed bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, compressed := image(t, "amd64", "", tt.layers...)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := Build(img, elf.EM_X86_64, tt.lim, io.Discard)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, bundle.ErrImageTooLarge) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("err = %v, want ErrImageTooLarge with %q", err, tt.text)
			}
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d KiB of gzip layers refused in %v, %.1f MiB allocated: %v", compressed>>10, took.Round(time.Millisecond), float64(alloc)/(1<<20), err)
			if max := uint64(tt.lim.Bytes) + 32<<20; alloc > max {
				t.Errorf("%d MiB allocated to refuse it, want under %d MiB", alloc>>20, max>>20)
			}
		})
	}
}

// TestBuildRoundTrip: Build's bundle unpacks to the image's files and
// config, and the same image gives the same bytes.
func TestBuildRoundTrip(t *testing.T) {
	img, _ := image(t, "amd64", "", []ent{dir("app"), run, reg("app/data", "hello"), sym("bin/sh", "/app/run")}, []ent{reg("etc/conf", "x=1")})
	var b1, b2 bytes.Buffer
	cfg, err := Build(img, elf.EM_X86_64, bundle.DefaultLimits, &b1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build(img, elf.EM_X86_64, bundle.DefaultLimits, &b2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1.Bytes(), b2.Bytes()) {
		t.Error("two builds of one image differ")
	}
	want, _ := ImageConfig(img)
	dir, got := unpackBundle(t, b1.Bytes())
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(cfg, want) {
		t.Errorf("config %+v (Build: %+v), want %+v", got, cfg, want)
	}
	for p, data := range map[string]string{"app/data": "hello", "etc/conf": "x=1", "bin/sh": run.data} {
		if b, err := os.ReadFile(filepath.Join(dir, bundle.RootName, p)); err != nil || string(b) != data {
			t.Errorf("%s: %q %v, want %q", p, b, err, data)
		}
	}
	if l := links(t, dir); l["bin/sh"] != "../app/run" {
		t.Errorf("bin/sh -> %q", l["bin/sh"])
	}
}

func TestCheck(t *testing.T) {
	x86, arm := miniELF(elf.EM_X86_64), miniELF(elf.EM_ARM)
	// A real dynamically linked executable, and its loader's path.
	ls, err := os.ReadFile("/bin/ls")
	if err != nil {
		t.Skip("needs /bin/ls, a dynamically linked executable")
	}
	f, err := elf.NewFile(bytes.NewReader(ls))
	if err != nil || f.Machine != elf.EM_X86_64 {
		t.Skip("/bin/ls is not an x86-64 ELF")
	}
	var loader string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, _ := io.ReadAll(p.Open())
			loader = strings.TrimPrefix(strings.TrimRight(string(b), "\x00"), "/")
		}
	}
	file := func(data string, mode int64) bundle.Entry {
		return bundle.Entry{Type: tar.TypeReg, Mode: mode, Data: []byte(data)}
	}
	link := func(target string) bundle.Entry { return bundle.Entry{Type: tar.TypeSymlink, Target: target} }
	exe := func(data string) bundle.Entry { return file(data, 0o755) }
	tests := []struct {
		name  string
		files map[string]bundle.Entry
		cfg   bundle.Config
		text  string // "" when it can run
	}{
		{"a static executable", map[string]bundle.Entry{"app/run": exe(x86)}, bundle.Config{Entrypoint: []string{"/app/run"}}, ""},
		{"another machine", map[string]bundle.Entry{"app/run": exe(arm)}, bundle.Config{Entrypoint: []string{"/app/run"}}, "built for EM_ARM, the worker is EM_X86_64"},
		{"dynamic without its loader", map[string]bundle.Entry{"bin/ls": exe(string(ls))}, bundle.Config{Entrypoint: []string{"/bin/ls"}},
			"dynamically linked and needs /" + loader},
		{"dynamic with its loader behind a usrmerge link", map[string]bundle.Entry{"bin/ls": exe(string(ls)),
			path.Dir(loader): link("usr/" + path.Dir(loader)), "usr/" + loader: exe(x86)}, bundle.Config{Entrypoint: []string{"/bin/ls"}}, ""},
		{"dynamic with a loader of another machine", map[string]bundle.Entry{"bin/ls": exe(string(ls)), loader: exe(arm)},
			bundle.Config{Entrypoint: []string{"/bin/ls"}}, "not an ELF for EM_X86_64"},
		{"a script with its interpreter", map[string]bundle.Entry{"app/run": exe("#!/bin/sh -e\necho hi\n"), "bin/sh": exe(x86)},
			bundle.Config{Entrypoint: []string{"/app/run"}}, ""},
		{"a script without its interpreter", map[string]bundle.Entry{"app/run": exe("#!/bin/sh\necho hi\n")},
			bundle.Config{Entrypoint: []string{"/app/run"}}, "script for /bin/sh, which is not a file in the image"},
		{"a script for an interpreter of another machine", map[string]bundle.Entry{"app/run": exe("#!/bin/sh\n"), "bin/sh": exe(arm)},
			bundle.Config{Entrypoint: []string{"/app/run"}}, "/bin/sh is built for EM_ARM"},
		{"scripts all the way down", map[string]bundle.Entry{"a": exe("#!/b\n"), "b": exe("#!/a\n")},
			bundle.Config{Entrypoint: []string{"/a"}}, "more than 4 #! interpreters"},
		{"a bare name in the image's PATH", map[string]bundle.Entry{"usr/bin/fwatchdog": exe(x86)},
			bundle.Config{Entrypoint: []string{"fwatchdog"}, Env: []string{"PATH=/nope:/usr/bin"}}, ""},
		{"a bare name in the default PATH, cmd only", map[string]bundle.Entry{"usr/local/bin/app": exe(x86)},
			bundle.Config{Cmd: []string{"app", "-x"}}, ""},
		{"a bare name not in PATH", map[string]bundle.Entry{"app/fwatchdog": exe(x86)},
			bundle.Config{Entrypoint: []string{"fwatchdog"}, Env: []string{"PATH=/usr/bin"}}, "entrypoint fwatchdog is not a file in the image (PATH /usr/bin)"},
		{"a relative path from the working directory", map[string]bundle.Entry{"home/app/run": exe(x86)},
			bundle.Config{Entrypoint: []string{"./run"}, WorkingDir: "/home/app"}, ""},
		{"not executable", map[string]bundle.Entry{"app/run": file(x86, 0o644)}, bundle.Config{Entrypoint: []string{"/app/run"}}, "not executable"},
		{"neither ELF nor script", map[string]bundle.Entry{"app/run": exe("MZ")}, bundle.Config{Entrypoint: []string{"/app/run"}}, "neither an ELF"},
		{"no entrypoint or cmd", map[string]bundle.Entry{"app/run": exe(x86)}, bundle.Config{}, "no entrypoint or cmd"},
		{"the entrypoint is a directory", map[string]bundle.Entry{"app": {Type: tar.TypeDir, Mode: 0o755}}, bundle.Config{Entrypoint: []string{"/app"}}, "not a file in the image"},
		{"a link loop", map[string]bundle.Entry{"a": link("b"), "b": link("a")}, bundle.Config{Entrypoint: []string{"/a"}}, "not a file in the image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(&bundle.Tree{Files: tt.files}, tt.cfg, elf.EM_X86_64)
			if tt.text == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, bundle.ErrCannotRun) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("err = %v, want ErrCannotRun with %q", err, tt.text)
			}
		})
	}
}
