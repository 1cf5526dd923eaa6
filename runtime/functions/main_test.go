package functions

import (
	"os"
	"testing"

	"github.com/microfaas/microfaas/runtime/sandbox"
)

// TestMain lets this test binary serve as the sandbox helper, as mfinit does.
func TestMain(m *testing.M) {
	sandbox.MaybeMain()
	os.Exit(m.Run())
}
