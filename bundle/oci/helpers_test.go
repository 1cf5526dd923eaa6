package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// miniELF is the 64-byte header of an executable for machine: enough for
// debug/elf and Check, static (no program headers, so no loader).
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

// ent is one tar entry of a test layer; zeros, if set, is a file of that
// many zero bytes streamed into the layer (a bomb is never in memory).
type ent struct {
	name, link string
	typ        byte
	mode       int64
	data       string
	zeros      int64
}

func reg(name, data string) ent      { return ent{name: name, typ: tar.TypeReg, mode: 0o755, data: data} }
func sym(name, link string) ent      { return ent{name: name, typ: tar.TypeSymlink, link: link} }
func hard(name, link string) ent     { return ent{name: name, typ: tar.TypeLink, link: link} }
func dir(name string) ent            { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func zeros(name string, n int64) ent { return ent{name: name, typ: tar.TypeReg, mode: 0o644, zeros: n} }

// run is the entrypoint of the test images: a static x86-64 executable.
var run = reg("app/run", miniELF(elf.EM_X86_64))

// gzLayer writes ents as a gzip-compressed tar layer, as a registry holds
// it, and returns it and its compressed size.
func gzLayer(t testing.TB, ents ...ent) (v1.Layer, int) {
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

// image builds an image of the layers (lowest first) for arch/variant
// with entrypoint /app/run, and returns it with the compressed size of
// its layers.
func image(t testing.TB, arch, variant string, layers ...[]ent) (v1.Image, int) {
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
	cf.OS, cf.Architecture, cf.Variant = "linux", arch, variant
	cf.Config.Entrypoint = []string{"/app/run"}
	cf.Config.Env = []string{"PATH=/app:/bin"}
	img, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img, compressed
}
