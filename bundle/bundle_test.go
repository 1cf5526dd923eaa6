package bundle

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// sample is a tree with what real images hold: nested directories (one
// read-only, one sticky), a setuid file, links relative and to the root,
// and a file whose directories the tree does not list.
func sample() *Tree {
	return &Tree{Files: map[string]Entry{
		"bin":             {Type: tar.TypeDir, Mode: 0o555},
		"bin/app":         {Type: tar.TypeReg, Mode: 0o4755, Data: []byte("\x7fELF app")},
		"lib/ld.so":       {Type: tar.TypeReg, Mode: 0o755, Data: []byte("loader")},
		"lib64":           {Type: tar.TypeDir, Mode: 0o755},
		"lib64/ld.so":     {Type: tar.TypeSymlink, Target: "../lib/ld.so"},
		"root":            {Type: tar.TypeSymlink, Target: "."},
		"tmp":             {Type: tar.TypeDir, Mode: 0o1777},
		"etc/deep/x/conf": {Type: tar.TypeReg, Mode: 0o644, Data: []byte("a=b\n")},
		"empty":           {Type: tar.TypeReg, Mode: 0o600},
	}}
}

var sampleConfig = Config{Entrypoint: []string{"/bin/app"}, Cmd: []string{"-x"}, Env: []string{"PATH=/bin"}, WorkingDir: "/tmp", User: "1000:1000"}

func encode(t *testing.T, tr *Tree, cfg Config) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Encode(&b, tr, cfg); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestEncodeUnpackRoundTrip(t *testing.T) {
	b := encode(t, sample(), sampleConfig)
	dir := t.TempDir()
	cfg, err := Unpack(bytes.NewReader(b), dir, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, sampleConfig) {
		t.Errorf("config = %+v, want %+v", cfg, sampleConfig)
	}
	type want struct {
		mode fs.FileMode
		data string // contents, or a link's target
	}
	wants := map[string]want{
		"config.json":            {0o644, `{"entrypoint":["/bin/app"],"cmd":["-x"],"env":["PATH=/bin"],"workdir":"/tmp","user":"1000:1000"}`},
		"rootfs":                 {fs.ModeDir | 0o755, ""},
		"rootfs/bin":             {fs.ModeDir | 0o555, ""},
		"rootfs/bin/app":         {0o755, "\x7fELF app"},   // setuid cleared
		"rootfs/lib":             {fs.ModeDir | 0o755, ""}, // added: the tree lacks it
		"rootfs/lib/ld.so":       {0o755, "loader"},
		"rootfs/lib64":           {fs.ModeDir | 0o755, ""},
		"rootfs/lib64/ld.so":     {fs.ModeSymlink | 0o777, "../lib/ld.so"},
		"rootfs/root":            {fs.ModeSymlink | 0o777, "."},
		"rootfs/tmp":             {fs.ModeDir | fs.ModeSticky | 0o777, ""},
		"rootfs/etc":             {fs.ModeDir | 0o755, ""},
		"rootfs/etc/deep":        {fs.ModeDir | 0o755, ""},
		"rootfs/etc/deep/x":      {fs.ModeDir | 0o755, ""},
		"rootfs/etc/deep/x/conf": {0o644, "a=b\n"},
		"rootfs/empty":           {0o600, ""},
	}
	got := map[string]want{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		w := want{mode: fi.Mode()}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			w.data, err = os.Readlink(p)
		case fi.Mode().IsRegular():
			var b []byte
			b, err = os.ReadFile(p)
			w.data = string(b)
		}
		got[rel] = w
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, wants) {
		t.Errorf("unpacked:\n%v\nwant:\n%v", got, wants)
	}
}

// TestEncodeDeterministic: the same tree and config give the same bytes (map
// order, run after run), so the same digest; any change gives another.
func TestEncodeDeterministic(t *testing.T) {
	first := encode(t, sample(), sampleConfig)
	d0, _ := Digest(bytes.NewReader(first))
	for i := 0; i < 20; i++ {
		if b := encode(t, sample(), sampleConfig); !bytes.Equal(b, first) {
			t.Fatalf("encoding %d differs from the first", i)
		}
	}
	changed := sample()
	changed.Files["empty"] = Entry{Type: tar.TypeReg, Mode: 0o644}
	for name, b := range map[string][]byte{
		"a mode":   encode(t, changed, sampleConfig),
		"a config": encode(t, sample(), Config{Entrypoint: []string{"/bin/app"}}),
	} {
		if d, _ := Digest(bytes.NewReader(b)); d == d0 {
			t.Errorf("changing %s kept the digest %s", name, d)
		}
	}
	if !strings.HasPrefix(d0, "sha256:") || len(d0) != len("sha256:")+64 {
		t.Errorf("digest %q is not sha256:<hex>", d0)
	}
	if err := Verify(bytes.NewReader(first), d0); err != nil {
		t.Errorf("Verify of the same bytes: %v", err)
	}
	if err := Verify(bytes.NewReader(first[1:]), d0); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("Verify of other bytes: %v, want ErrDigestMismatch", err)
	}
}

func TestEncodeRefusesUnsafeTrees(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]Entry
		text  string
	}{
		{"an entry below a symlink", map[string]Entry{"l": {Type: tar.TypeSymlink, Target: "."}, "l/x": {Type: tar.TypeReg}}, "l/x is below l"},
		{"an entry below a file", map[string]Entry{"f": {Type: tar.TypeReg}, "f/x": {Type: tar.TypeReg}}, "f/x is below f"},
		{"an absolute link", map[string]Entry{"l": {Type: tar.TypeSymlink, Target: "/functions"}}, "is absolute"},
		{"a link above the root", map[string]Entry{"a/l": {Type: tar.TypeSymlink, Target: "../../x"}}, "climbs above"},
		{"a link with .. inside", map[string]Entry{"a/l": {Type: tar.TypeSymlink, Target: "b/../../x"}}, "could climb out"},
		{"a name with ..", map[string]Entry{"a/../../x": {Type: tar.TypeReg}}, "not a clean path"},
		{"an absolute name", map[string]Entry{"/x": {Type: tar.TypeReg}}, "not a clean path"},
		{"a device node", map[string]Entry{"dev/sda": {Type: tar.TypeChar}}, "has type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Encode(&bytes.Buffer{}, &Tree{Files: tt.files}, Config{})
			if !errors.Is(err, ErrUnsafeImage) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("err = %v, want ErrUnsafeImage with %q", err, tt.text)
			}
		})
	}
}

// rec is one record of a hand-made (hostile) archive.
type rec struct {
	name string
	mode uint32
	data string
	size int64 // the header's size, when it lies (-1: len(data))
}

func archive(recs ...rec) []byte {
	var b bytes.Buffer
	a := &newcWriter{w: &b}
	for _, r := range recs {
		a.record(r.name, r.mode, []byte(r.data))
	}
	a.record("TRAILER!!!", 0, nil)
	return b.Bytes()
}

var (
	cfgRec  = rec{name: "config.json", mode: modeReg | 0o644, data: `{"entrypoint":["/x"]}`}
	rootRec = rec{name: "rootfs", mode: modeDir | 0o755}
)

func dirRec(n string) rec          { return rec{name: n, mode: modeDir | 0o755} }
func fileRec(n, data string) rec   { return rec{name: n, mode: modeReg | 0o644, data: data} }
func linkRec(n, target string) rec { return rec{name: n, mode: modeSymlink | 0o777, data: target} }

// TestUnpackHostileArchives hands Unpack archives no Encode writes. Each is
// refused, and nothing appears outside dir: dir sits next to a victim
// folder every attack aims at.
func TestUnpackHostileArchives(t *testing.T) {
	small := Limits{Stream: 1 << 20, Bytes: 64 << 10, Files: 10, FileBytes: 1 << 10}
	many := []rec{cfgRec, rootRec}
	for i := 0; i < 20; i++ {
		many = append(many, fileRec("rootfs/f"+strings.Repeat("x", i), ""))
	}
	hugeSize := archive(cfgRec, rootRec, fileRec("rootfs/big", "x"))
	// The header's filesize field of rootfs/big (the third record) says 4 GiB.
	idx := bytes.Index(hugeSize, []byte("rootfs/big")) - 110
	copy(hugeSize[idx+6+8*6:], "ffffffff")
	tests := []struct {
		name    string
		b       []byte
		lim     Limits
		wantErr error
		text    string
		pre     func(t *testing.T, dir, victim string) // sets dir up before
	}{
		{name: "an entry below a symlink",
			b: archive(cfgRec, rootRec, linkRec("rootfs/l", "."), fileRec("rootfs/l/aaa", "evil")), wantErr: ErrUnsafeImage, text: "rootfs/l/aaa is not below a directory"},
		{name: "a symlink out of the bundle, then an entry below it",
			b: archive(cfgRec, rootRec, linkRec("rootfs/l", "../../victim"), fileRec("rootfs/l/aaa", "evil")), wantErr: ErrUnsafeImage, text: "climbs above"},
		{name: "an absolute symlink",
			b: archive(cfgRec, rootRec, linkRec("rootfs/var", "/")), wantErr: ErrUnsafeImage, text: "is absolute"},
		{name: "an entry below a file",
			b: archive(cfgRec, rootRec, fileRec("rootfs/f", ""), fileRec("rootfs/f/x", "")), wantErr: ErrUnsafeImage, text: "not below a directory"},
		{name: "a name with ..",
			b: archive(cfgRec, rootRec, fileRec("rootfs/../../victim/aaa", "evil")), wantErr: ErrUnsafeImage, text: "clean path"},
		{name: "../x", b: archive(fileRec("../x", "evil")), wantErr: ErrUnsafeImage, text: "clean path"},
		{name: "an absolute name", b: archive(cfgRec, rootRec, fileRec("/abs", "evil")), wantErr: ErrUnsafeImage, text: "clean path"},
		{name: "a missing parent", b: archive(cfgRec, rootRec, fileRec("rootfs/a/b", "")), wantErr: ErrUnsafeImage, text: "not below a directory"},
		{name: "a device node",
			b: archive(cfgRec, rootRec, rec{name: "rootfs/sda", mode: 0o060660}), wantErr: ErrUnsafeImage, text: "no device nodes"},
		{name: "a name twice",
			b: archive(cfgRec, rootRec, fileRec("rootfs/a", "1"), fileRec("rootfs/a", "2")), wantErr: ErrUnsafeImage, text: "appears twice"},
		{name: "no config", b: archive(rootRec), wantErr: ErrUnsafeImage, text: "lacks config.json"},
		{name: "bytes after the trailer", b: append(archive(cfgRec, rootRec), "0707"...), wantErr: ErrUnsafeImage, text: "after the archive's trailer"},
		{name: "truncated", b: archive(cfgRec, rootRec, fileRec("rootfs/a", "abcdef"))[:300], wantErr: ErrUnsafeImage, text: "truncated"},
		{name: "truncated in a file", b: archive(cfgRec, rootRec, fileRec("rootfs/a", strings.Repeat("x", 1000)))[:600], wantErr: ErrUnsafeImage, text: "truncated archive in rootfs/a"},
		{name: "not newc", b: []byte(strings.Repeat("x", 200)), wantErr: ErrUnsafeImage, text: "not a newc"},
		{name: "a huge size header", b: hugeSize, wantErr: ErrImageTooLarge, text: "rootfs/big is 4294967295 bytes"},
		{name: "too many entries", b: archive(many...), lim: small, wantErr: ErrImageTooLarge, text: "more than 10 entries"},
		{name: "a file over the limit",
			b: archive(cfgRec, rootRec, fileRec("rootfs/a", strings.Repeat("x", 2<<10))), lim: small, wantErr: ErrImageTooLarge, text: "limit for one file"},
		{name: "an archive over the stream limit",
			b:   archive(cfgRec, rootRec, fileRec("rootfs/a", strings.Repeat("x", 900)), fileRec("rootfs/b", strings.Repeat("x", 900))),
			lim: Limits{Stream: 1500, Bytes: 1 << 20, Files: 10, FileBytes: 1 << 10}, wantErr: ErrImageTooLarge, text: "larger than 1500 bytes"},
		{name: "dir already holds a symlink rootfs -> victim",
			b: archive(cfgRec, rootRec, fileRec("rootfs/aaa", "evil")), wantErr: nil, text: "mkdir rootfs: file exists",
			pre: func(t *testing.T, dir, victim string) {
				if err := os.Symlink(victim, filepath.Join(dir, "rootfs")); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top := t.TempDir()
			dir, victim := filepath.Join(top, "bundle"), filepath.Join(top, "victim")
			for _, d := range []string{dir, victim} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if tt.pre != nil {
				tt.pre(t, dir, victim)
			}
			lim := tt.lim
			if lim == (Limits{}) {
				lim = DefaultLimits
			}
			_, err := Unpack(bytes.NewReader(tt.b), dir, lim)
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("err = %v, want %v with %q", err, tt.wantErr, tt.text)
			}
			// The host's copy for a worker's initramfs checks as Unpack does.
			if tt.pre == nil {
				err := WritePrefixed(io.Discard, bytes.NewReader(tt.b), "bundles/x", lim)
				if err == nil || !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.text) {
					t.Errorf("WritePrefixed: err = %v, want %v with %q", err, tt.wantErr, tt.text)
				}
			}
			if ents, _ := os.ReadDir(victim); len(ents) > 0 {
				t.Errorf("victim folder holds %v", ents)
			}
			if ents, _ := os.ReadDir(top); len(ents) != 2 {
				t.Errorf("next to the bundle: %v", ents)
			}
		})
	}
}

func TestTreeResolve(t *testing.T) {
	tr := &Tree{Files: map[string]Entry{
		"usr/lib64/ld.so": {Type: tar.TypeReg},
		"lib64":           {Type: tar.TypeSymlink, Target: "usr/lib64"},
		"abs":             {Type: tar.TypeSymlink, Target: "/lib64/ld.so"},
		"up":              {Type: tar.TypeSymlink, Target: "../../../usr/lib64/ld.so"},
		"d":               {Type: tar.TypeDir},
		"f":               {Type: tar.TypeReg},
		"loop1":           {Type: tar.TypeSymlink, Target: "loop2"},
		"loop2":           {Type: tar.TypeSymlink, Target: "/loop1"},
	}}
	tests := []struct {
		p, want string
		ok      bool
	}{
		{"/usr/lib64/ld.so", "usr/lib64/ld.so", true},
		{"/lib64/ld.so", "usr/lib64/ld.so", true}, // through a linked directory
		{"abs", "usr/lib64/ld.so", true},
		{"/up", "usr/lib64/ld.so", true}, // ".." stops at the root
		{"/d/../f", "f", true},
		{"/d", "", false},   // a directory
		{"/f/x", "", false}, // a file used as a directory
		{"/missing", "", false},
		{"/loop1", "", false},
	}
	for _, tt := range tests {
		got, ok := tr.Resolve(tt.p)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("Resolve(%q) = %q, %v; want %q, %v", tt.p, got, ok, tt.want, tt.ok)
		}
	}
}

func TestWatchdog(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want bool
	}{
		{Config{Entrypoint: []string{"fwatchdog"}}, true},
		{Config{Cmd: []string{"/home/app/fwatchdog"}}, true},
		{Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"fwatchdog"}}, false},
		{Config{}, false},
	} {
		if got := tt.cfg.Watchdog(); got != tt.want {
			t.Errorf("%+v.Watchdog() = %v", tt.cfg, got)
		}
	}
}
