package builder

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/microfaas/microfaas/bundle"
	"github.com/microfaas/microfaas/bundle/oci"
	"github.com/microfaas/microfaas/initramfs"
	"github.com/microfaas/microfaas/target"
)

// ent is one tar entry of a hostile layer; zeros, if set, is the size of a
// file of zero bytes streamed into the layer (a bomb is never in memory).
type ent struct {
	name, link string
	typ        byte
	mode       int64
	data       string
	zeros      int64
}

func reg(name, data string) ent { return ent{name: name, typ: tar.TypeReg, mode: 0o755, data: data} }
func sym(name, link string) ent { return ent{name: name, typ: tar.TypeSymlink, link: link} }

// script is the test images' entrypoint: the header of a static x86-64
// executable, which oci.Check accepts (a #! script would need its
// interpreter in the image).
var script = reg("app/run", miniELF(elf.EM_X86_64))

// miniELF is the 64-byte header of a static executable for machine.
func miniELF(machine elf.Machine) string {
	var h [64]byte
	copy(h[:], "\x7fELF")
	h[4], h[5], h[6] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	le := binary.LittleEndian
	le.PutUint16(h[16:], uint16(elf.ET_EXEC))
	le.PutUint16(h[18:], uint16(machine))
	le.PutUint32(h[20:], uint32(elf.EV_CURRENT))
	le.PutUint16(h[52:], 64) // header size
	le.PutUint16(h[54:], 56) // program header size
	le.PutUint16(h[58:], 64) // section header size
	return string(h[:])
}

// gzLayer writes ents as a gzip-compressed tar layer, as a registry or an
// OCI layout holds it.
func gzLayer(t *testing.T, ents ...ent) (v1.Layer, int) {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	zero := make([]byte, 1<<20)
	for _, e := range ents {
		size := int64(len(e.data)) + e.zeros
		if e.typ != tar.TypeReg {
			size = 0
		}
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: size, Format: tar.FormatPAX}
		if e.typ == tar.TypeChar {
			h.Devmajor, h.Devminor = 8, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ != tar.TypeReg {
			continue
		}
		tw.Write([]byte(e.data))
		for left := e.zeros; left > 0; left -= int64(len(zero)) {
			tw.Write(zero[:min(left, int64(len(zero)))])
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l, len(b)
}

// ociLayout writes an amd64 image of the layers (lowest first) with
// entrypoint /app/run to an OCI layout directory and returns its spec and
// the compressed size of its layers.
func ociLayout(t *testing.T, layers ...[]ent) (string, int) {
	t.Helper()
	img := empty.Image
	compressed := 0
	for _, ents := range layers {
		l, n := gzLayer(t, ents...)
		compressed += n
		var err error
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = []string{"/app/run"}
	img, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "oci")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		t.Fatal(err)
	}
	return "oci:" + dir, compressed
}

// unpacked writes the initramfs the options make and reads it back as the
// kernel would see it: name -> record, with file contents and link targets.
func unpacked(t *testing.T, opts []initramfs.Option) (map[string]cpio.Record, map[string]string) {
	t.Helper()
	a, err := initramfs.New(append(opts, initramfs.WithBytes("init", []byte("init"), 0o755))...)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := a.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	rs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(buf.Bytes())))
	if err != nil {
		t.Fatal(err)
	}
	recs, bodies := map[string]cpio.Record{}, map[string]string{}
	for _, r := range rs {
		recs[r.Name] = r
		b, _ := io.ReadAll(io.NewSectionReader(r, 0, int64(r.FileSize)))
		bodies[r.Name] = string(b)
	}
	return recs, bodies
}

// TestHostileImageTrees: issue 18, attack 1 and its relatives. An image's
// tree lands under /functions/NAME/rootfs in the worker's initramfs, next to
// other tenants' functions, /init and busybox; nothing in it may write or
// point outside that folder.
func TestHostileImageTrees(t *testing.T) {
	ctx := context.Background()
	const root = "functions/evil/rootfs/"
	tests := []struct {
		name    string
		layers  [][]ent // lowest first
		wantErr error
		errText string // in the error, when wantErr is set
		check   func(t *testing.T, recs map[string]cpio.Record, bodies map[string]string)
	}{
		{name: "attack 1: a file below a link to /functions",
			layers:  [][]ent{{script, reg("l/aaa", "#!/bin/sh\necho attacker\n"), sym("l", "/functions")}},
			wantErr: ErrUnsafeImage, errText: "l/aaa is below the symlink l -> /functions"},
		{name: "the link in an upper layer, the file in a lower one spelled differently",
			layers:  [][]ent{{script, reg("l/aaa", "evil")}, {sym("/l", "/functions")}},
			wantErr: ErrUnsafeImage, errText: "l/aaa is below the symlink l"},
		{name: "a file below a file",
			layers:  [][]ent{{script, reg("f/g", "x"), reg("f", "y")}},
			wantErr: ErrUnsafeImage, errText: "f/g is below the file f"},
		{name: ".. after a link climbs out of the rootfs",
			layers:  [][]ent{{script, sym("s", "."), sym("a", "s/s/../..")}},
			wantErr: ErrUnsafeImage, errText: "symlink a -> s/s/../.. climbs out of the symlink s"},
		{name: "a whiteout of a path outside the image fails the whole image, not just its tail",
			layers:  [][]ent{{reg("app/lower", "x")}, {script, reg("../../functions/.wh.aaa", "")}},
			errText: "unsafe tar path"},
		{name: "a hard link to a file outside the image",
			layers:  [][]ent{{script, {name: "app/x", typ: tar.TypeLink, link: "/functions/aaa"}}},
			wantErr: ErrUnsafeImage, errText: "hard link app/x -> functions/aaa"},
		{name: "a hard link through a link",
			layers:  [][]ent{{script, sym("l", "/etc"), reg("etc/passwd", "root"), {name: "app/p", typ: tar.TypeLink, link: "l/passwd"}}},
			wantErr: ErrUnsafeImage, errText: "hard link app/p -> l/passwd"},
		{name: "absolute and climbing links are rewritten to stay in the rootfs",
			layers: [][]ent{{script, reg("lib/ld.so", "ld"), sym("lib64/ld.so", "/lib/ld.so"),
				sym("a/b/up", "/../../../../functions/aaa"), sym("a/root", "/"), sym("a/rel", "../lib/ld.so")}},
			check: func(t *testing.T, recs map[string]cpio.Record, bodies map[string]string) {
				for link, want := range map[string]string{"lib64/ld.so": "../lib/ld.so", "a/b/up": "../../functions/aaa", "a/root": "..", "a/rel": "../lib/ld.so"} {
					r := recs[root+link]
					if r.Mode&cpio.S_IFMT != cpio.S_IFLNK || bodies[root+link] != want {
						t.Errorf("%s: mode %o -> %q, want a link to %q", link, r.Mode, bodies[root+link], want)
					}
				}
			}},
		{name: "a whiteout hides a directory a link replaces",
			layers: [][]ent{{script, {name: "d", typ: tar.TypeDir, mode: 0o755}, reg("d/aaa", "lower")},
				{sym("d", "/functions"), reg(".wh.d", "")}},
			check: func(t *testing.T, recs map[string]cpio.Record, bodies map[string]string) {
				if _, ok := recs[root+"d/aaa"]; ok {
					t.Error("the whited-out d/aaa is in the initramfs")
				}
				if bodies[root+"d"] != "functions" {
					t.Errorf("d -> %q, want the rootfs's own functions", bodies[root+"d"])
				}
			}},
		{name: "device nodes dropped, setuid and setgid cleared, hard links copied",
			layers: [][]ent{{script, {name: "dev/sda", typ: tar.TypeChar, mode: 0o666}, {name: "fifo", typ: tar.TypeFifo, mode: 0o666},
				{name: "app/su", typ: tar.TypeReg, mode: 0o4755, data: "su"}, {name: "app/sg", typ: tar.TypeDir, mode: 0o2775},
				{name: "app/su2", typ: tar.TypeLink, link: "./app/su"}}},
			check: func(t *testing.T, recs map[string]cpio.Record, bodies map[string]string) {
				for _, n := range []string{"dev/sda", "fifo"} {
					if _, ok := recs[root+n]; ok {
						t.Errorf("%s is in the initramfs", n)
					}
				}
				for n, want := range map[string]uint64{"app/su": cpio.S_IFREG | 0o755, "app/sg": cpio.S_IFDIR | 0o775, "app/su2": cpio.S_IFREG | 0o755} {
					if recs[root+n].Mode != want {
						t.Errorf("%s: mode %o, want %o", n, recs[root+n].Mode, want)
					}
				}
				if bodies[root+"app/su2"] != "su" {
					t.Errorf("hard link copy holds %q", bodies[root+"app/su2"])
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, _ := ociLayout(t, tt.layers...)
			opts, _, err := functionOptions(ctx, target.X86, "evil", spec)
			if tt.errText != "" {
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v, want %v with %q", err, tt.wantErr, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			recs, bodies := unpacked(t, opts)
			tt.check(t, recs, bodies)
		})
	}
}

// TestAttack1NextToAnHonestFunction is the attack as it was reproduced: the
// worker image holds the honest function aaa and the attacker's image,
// whose `l -> /functions` and `l/aaa` made the kernel's unpacker replace
// /functions/aaa. The build must refuse the attacker's image; and were a
// builder to pass such entries on, the initramfs writer refuses them too.
func TestAttack1NextToAnHonestFunction(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	wc := filepath.Join(dir, "aaa")
	if err := os.WriteFile(wc, buildWordcount(t, target.X86.GOARCH), 0o755); err != nil {
		t.Fatal(err)
	}
	honest, _, err := functionOptions(ctx, target.X86, "aaa", wc)
	if err != nil {
		t.Fatal(err)
	}
	evil, _ := ociLayout(t, []ent{script, reg("l/aaa", "#!/bin/sh\necho attacker\n"), sym("l", "/functions")})
	_, _, err = functionOptions(ctx, target.X86, "evil", evil)
	if !errors.Is(err, ErrUnsafeImage) || !strings.Contains(err.Error(), "function evil") || !strings.Contains(err.Error(), "l/aaa") {
		t.Fatalf("err = %v, want ErrUnsafeImage naming function evil and l/aaa", err)
	}
	// The same entries handed straight to the initramfs writer.
	a, err := initramfs.New(append(honest, initramfs.WithBytes("init", []byte("init"), 0o755),
		initramfs.WithSymlink("functions/evil/rootfs/l", "/functions"),
		initramfs.WithBytes("functions/evil/rootfs/l/aaa", []byte("#!/bin/sh\necho attacker\n"), 0o755))...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteTo(io.Discard); !errors.Is(err, initramfs.ErrUnderSymlink) {
		t.Fatalf("initramfs WriteTo err = %v, want ErrUnderSymlink", err)
	}
}

// TestImageBombs: limits on what one image may make mfbuild read and hold.
// Each bomb is small compressed and large uncompressed; the refusal is
// ErrImageTooLarge, and memory stays far below the uncompressed size.
func TestImageBombs(t *testing.T) {
	ctx := context.Background()
	small := Limits{Stream: 8 << 20, Bytes: 4 << 20, Files: 100, FileBytes: 2 << 20}
	many := func(n int, e func(i int) ent) []ent {
		out := []ent{script}
		for i := 0; i < n; i++ {
			out = append(out, e(i))
		}
		return out
	}
	tests := []struct {
		name   string
		lim    Limits
		layers [][]ent
		text   string
	}{
		{"one 300 MiB file, default limits", DefaultLimits,
			[][]ent{{script, {name: "app/bomb", typ: tar.TypeReg, mode: 0o644, zeros: 300 << 20}}}, "app/bomb is 314572800 bytes"},
		{"three 100 MiB files, default limits", DefaultLimits,
			[][]ent{many(3, func(i int) ent {
				return ent{name: "app/b" + string(rune('0'+i)), typ: tar.TypeReg, mode: 0o644, zeros: 100 << 20}
			})}, "more than 268435456 bytes of files"},
		{"too many entries", small,
			[][]ent{many(200, func(i int) ent { return reg("app/f"+strings.Repeat("x", i), "") })}, "more than 100 entries"},
		{"hard links multiply one file", small,
			[][]ent{many(10, func(i int) ent {
				if i == 0 {
					return ent{name: "app/one", typ: tar.TypeReg, mode: 0o644, zeros: 1 << 20}
				}
				return ent{name: "app/h" + string(rune('0'+i)), typ: tar.TypeLink, link: "app/one"}
			})}, "with hard links copied"},
		{"overwritten layers past the stream limit", small,
			[][]ent{{script, {name: "app/big", typ: tar.TypeReg, mode: 0o644, zeros: 2 << 20}},
				{{name: "app/big", typ: tar.TypeReg, mode: 0o644, zeros: 2 << 20}},
				{{name: "app/big", typ: tar.TypeReg, mode: 0o644, zeros: 2 << 20}},
				{{name: "app/big", typ: tar.TypeReg, mode: 0o644, zeros: 2 << 20}}},
			"more than 8388608 uncompressed bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, compressed := ociLayout(t, tt.layers...)
			old := imageLimits
			imageLimits = tt.lim
			defer func() { imageLimits = old }()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, _, err := functionOptions(ctx, target.X86, "bomb", spec)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrImageTooLarge) || !strings.Contains(err.Error(), tt.text) {
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

// TestBakedInMatchesBundle: a baked-in image function and the bundle a
// run-time deploy makes of the same image hold the same tree (one
// flattening, bundle/oci): the same names, modes, contents, link targets
// and config.json.
func TestBakedInMatchesBundle(t *testing.T) {
	ctx := context.Background()
	layers := [][]ent{
		{script, {name: "etc", typ: tar.TypeDir, mode: 0o750}, reg("etc/conf", "a=1"), sym("bin/sh", "/app/run"),
			{name: "app/su", typ: tar.TypeReg, mode: 0o4755, data: "su"}, {name: "dev/null", typ: tar.TypeChar, mode: 0o666}},
		{sym("var", "/"), reg("etc/.wh.conf", ""), reg("home/app/data", "d")},
	}
	spec, _ := ociLayout(t, layers...)
	opts, _, err := functionOptions(ctx, target.X86, "fn", spec)
	if err != nil {
		t.Fatal(err)
	}
	recs, bodies := unpacked(t, opts)
	baked := map[string]string{}
	const prefix = "functions/fn/"
	for n, r := range recs {
		if rel, ok := strings.CutPrefix(n, prefix); ok {
			baked[rel] = fmt.Sprintf("%o %q", r.Mode, bodies[n])
		}
	}

	idx, err := layout.ImageIndexFromPath(strings.TrimPrefix(spec, "oci:"))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := idx.IndexManifest()
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := oci.Build(img, target.X86.ELF, bundle.DefaultLimits, &b); err != nil {
		t.Fatal(err)
	}
	rs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b.Bytes())))
	if err != nil {
		t.Fatal(err)
	}
	bundled := map[string]string{}
	for _, r := range rs {
		data, _ := io.ReadAll(io.NewSectionReader(r, 0, int64(r.FileSize)))
		bundled[r.Name] = fmt.Sprintf("%o %q", r.Mode, data)
	}
	if !reflect.DeepEqual(baked, bundled) {
		t.Errorf("baked in (under %s):\n%v\nbundle:\n%v", prefix, baked, bundled)
	}
	if len(bundled) < 10 {
		t.Errorf("only %d entries compared", len(bundled))
	}
	t.Logf("%d entries the same, e.g. rootfs/var: %s, rootfs/app/su: %s", len(bundled), bundled["rootfs/var"], bundled["rootfs/app/su"])
}
