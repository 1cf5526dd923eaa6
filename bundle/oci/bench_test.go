package oci

import (
	"bytes"
	"debug/elf"
	"fmt"
	"math/rand"
	"testing"

	"github.com/microfaas/microfaas/bundle"
)

// BenchmarkBuild: an image of one gzip layer holding an entrypoint and
// n MiB of incompressible files (a Go function is about 5 MiB), to bundle
// bytes; MB/s of bundle (go test -bench Build -run XXX ./bundle/oci/).
func BenchmarkBuild(b *testing.B) {
	for _, mib := range []int{5, 50} {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			rnd := rand.New(rand.NewSource(1))
			ents := []ent{run}
			for i := 0; i < 16; i++ {
				data := make([]byte, mib<<20/16)
				rnd.Read(data)
				ents = append(ents, reg(fmt.Sprintf("app/lib/f%d", i), string(data)))
			}
			img, _ := image(b, "amd64", "", ents)
			var out bytes.Buffer
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out.Reset()
				if _, err := Build(img, elf.EM_X86_64, bundle.DefaultLimits, &out); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(out.Len()))
		})
	}
}
