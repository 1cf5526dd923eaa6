// Command mfrelay is the guestfwd relay of QEMU workers on user networking:
// QEMU runs it once per connection a worker opens to the worker port or a
// service (orchestrator/power/netfwd.go). It is mforch's own relay
// (internal/qemurelay) in a binary of its own: a start of this small
// program is on every cold start's path, and under load it starts in about
// a third of the time a start of the whole mforch binary takes
// (docs/security.md). mforch finds it beside itself, else relays with itself.
//
//	mfrelay __mf-qemu-relay SOURCE TARGET SLOTS
package main

import (
	"os"

	"github.com/microfaas/microfaas/internal/qemurelay"
)

func main() {
	// qemurelay's init has already served a well-formed call and exited.
	os.Stderr.WriteString("usage: mfrelay " + qemurelay.Arg + " SOURCE TARGET SLOTS (run by QEMU for mforch's workers)\n")
	os.Exit(2)
}
