package sandbox_test

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/runtime/sandbox"
)

// BenchmarkRun compares a plain child process with a contained run of the
// same static function (the attacker, reporting only).
func BenchmarkRun(b *testing.B) {
	bin := buildAttackerB(b)
	b.Run("plain", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			cmd := exec.Command(bin)
			cmd.Stdin = strings.NewReader("{}")
			if err := cmd.Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("contained", func(b *testing.B) {
		if sandbox.Available() == sandbox.None {
			b.Skip("no containment here")
		}
		spec := sandbox.Spec{Path: bin, Binds: []string{bin}, UID: sandbox.Nobody, GID: sandbox.Nobody}
		for i := 0; i < b.N; i++ {
			var out bytes.Buffer
			if err := sandbox.Run(context.Background(), spec, strings.NewReader("{}"), &out, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
