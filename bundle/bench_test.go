package bundle

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// benchTree is n MiB in 64 files of a few directories, like a small
// function image.
func benchTree(mib int) *Tree {
	t := &Tree{Files: map[string]Entry{}}
	data := bytes.Repeat([]byte("x"), mib<<20/64)
	for i := 0; i < 64; i++ {
		t.Files[fmt.Sprintf("usr/lib/d%d/f%d", i%8, i)] = Entry{Type: tar.TypeReg, Mode: 0o644, Data: data}
	}
	return t
}

// BenchmarkEncode and BenchmarkUnpack report MB/s of bundle bytes
// (go test -bench . -run XXX ./bundle/).
func BenchmarkEncode(b *testing.B) {
	for _, mib := range []int{5, 50} {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			t := benchTree(mib)
			b.SetBytes(int64(mib) << 20)
			for i := 0; i < b.N; i++ {
				if err := Encode(io.Discard, t, Config{Entrypoint: []string{"/x"}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkUnpack(b *testing.B) {
	for _, mib := range []int{5, 50} {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			var buf bytes.Buffer
			if err := Encode(&buf, benchTree(mib), Config{Entrypoint: []string{"/x"}}); err != nil {
				b.Fatal(err)
			}
			top := b.TempDir()
			b.SetBytes(int64(buf.Len()))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				dir := filepath.Join(top, fmt.Sprint(i))
				if err := os.Mkdir(dir, 0o700); err != nil {
					b.Fatal(err)
				}
				if _, err := Unpack(bytes.NewReader(buf.Bytes()), dir, DefaultLimits); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(dir)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkDigestTree: what a QEMU worker does with the bundle its kernel
// unpacked (MB/s of bundle bytes).
func BenchmarkDigestTree(b *testing.B) {
	for _, mib := range []int{5, 50} {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			var buf bytes.Buffer
			if err := Encode(&buf, benchTree(mib), Config{Entrypoint: []string{"/x"}}); err != nil {
				b.Fatal(err)
			}
			dir := b.TempDir()
			if _, err := Unpack(bytes.NewReader(buf.Bytes()), dir, DefaultLimits); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(buf.Len()))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := DigestTree(dir, DefaultLimits); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
