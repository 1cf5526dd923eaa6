package runtime

import (
	"bufio"
	"fmt"
	"io"

	"github.com/microfaas/microfaas/protocol"
)

// Restored is what a worker restored from a snapshot learned after the
// restore (mf.snapshot=1).
type Restored struct {
	Identity protocol.Identity
	Key      []byte // the worker's own key
	Seed     []byte // fresh entropy from the host, for Reseed
}

// WaitIdentity reads console lines from r until one is an identity line
// (protocol.EncodeIdentity) and returns it. Other lines are skipped; a
// malformed identity line is an error (the host is broken: stop rather
// than guess).
func WaitIdentity(r io.Reader) (Restored, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 4096)
	for sc.Scan() {
		id, key, seed, ok, err := protocol.DecodeIdentity(sc.Bytes())
		if err != nil {
			return Restored{}, err
		}
		if ok {
			return Restored{Identity: id, Key: key, Seed: seed}, nil
		}
	}
	if err := sc.Err(); err != nil {
		return Restored{}, fmt.Errorf("waiting for the identity on the console: %w", err)
	}
	return Restored{}, fmt.Errorf("waiting for the identity on the console: %w", io.ErrUnexpectedEOF)
}
