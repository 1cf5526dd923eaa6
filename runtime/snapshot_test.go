package runtime

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/protocol"
)

func TestWaitIdentity(t *testing.T) {
	good := protocol.Identity{ID: "vm3", Orch: "10.0.2.2:63302", Key: strings.Repeat("ab", protocol.KeySize),
		Seed: strings.Repeat("cd", protocol.SeedSize), NowUnixNS: 1700000000e9}
	for _, tt := range []struct {
		name    string
		console string
		err     error
	}{
		{"identity alone", string(protocol.EncodeIdentity(good)), nil},
		{"after other console lines", "\r\nnoise\n" + string(protocol.EncodeIdentity(good)), nil},
		{"malformed identity", protocol.IdentityPrefix + "{\"id\":\"\"}\n", protocol.ErrBadIdentity},
		{"console closed first", "noise\n", io.ErrUnexpectedEOF},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := WaitIdentity(strings.NewReader(tt.console))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if tt.err != nil {
				return
			}
			if r.Identity != good || !bytes.Equal(r.Key, bytes.Repeat([]byte{0xab}, protocol.KeySize)) ||
				!bytes.Equal(r.Seed, bytes.Repeat([]byte{0xcd}, protocol.SeedSize)) {
				t.Fatalf("got %+v", r)
			}
		})
	}
}

// Reseed runs the real ioctls against this host's kernel (they need
// CAP_SYS_ADMIN, which a worker's PID 1 has).
func TestReseed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("RNDADDENTROPY needs root")
	}
	if err := Reseed(bytes.Repeat([]byte{1}, protocol.SeedSize)); err != nil {
		if errors.Is(err, os.ErrPermission) {
			t.Skipf("no CAP_SYS_ADMIN here: %v", err)
		}
		t.Fatal(err)
	}
}
