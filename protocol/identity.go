package protocol

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// SnapshotReadyMarker is printed on the console by a worker booted with
// mf.snapshot=1 once it waits for its identity: the host saves the VM then.
const SnapshotReadyMarker = "MFINIT-SNAPSHOT-READY"

// IdentityPrefix starts the console line that gives a restored worker its
// identity. The worker turns the console's echo off before it waits, so
// the line (with the key) never shows in the console log.
const IdentityPrefix = "MFID "

// SeedSize is how many random bytes a restored worker gets to reseed its
// kernel's RNG: every restore of one snapshot starts from the same RNG
// state, which must never produce the same numbers twice.
const SeedSize = 32

// Identity is what a worker restored from a snapshot learns after the
// restore: who it is, its key, the time, and fresh entropy.
type Identity struct {
	ID        string `json:"id"`
	Orch      string `json:"orch"` // the orchestrator's host:port (mf.orch)
	Key       string `json:"key"`  // hex, KeySize bytes (WorkerKey)
	Seed      string `json:"seed"` // hex, SeedSize bytes from the host's RNG
	NowUnixNS int64  `json:"now_ns"`
}

// ErrBadIdentity means an identity line is malformed.
var ErrBadIdentity = errors.New("malformed identity line")

// EncodeIdentity is the console line (with its newline) for id.
func EncodeIdentity(id Identity) []byte {
	b, _ := json.Marshal(id) // strings and an int: cannot fail
	return append(append([]byte(IdentityPrefix), b...), '\n')
}

// DecodeIdentity reads one console line. It returns the key and seed
// decoded; ok is false for a line that is not an identity line at all
// (anything else on the console), err for one that is but is malformed.
func DecodeIdentity(line []byte) (id Identity, key, seed []byte, ok bool, err error) {
	line = bytes.TrimRight(line, "\r\n")
	rest, found := bytes.CutPrefix(line, []byte(IdentityPrefix))
	if !found {
		return id, nil, nil, false, nil
	}
	if err := json.Unmarshal(rest, &id); err != nil {
		return id, nil, nil, true, fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	if id.ID == "" || id.Orch == "" {
		return id, nil, nil, true, fmt.Errorf("%w: no worker id or orchestrator address", ErrBadIdentity)
	}
	key, err = hex.DecodeString(id.Key)
	if err != nil || len(key) != KeySize {
		return id, nil, nil, true, fmt.Errorf("%w: want a %d-byte hex key", ErrBadIdentity, KeySize)
	}
	seed, err = hex.DecodeString(id.Seed)
	if err != nil || len(seed) != SeedSize {
		return id, nil, nil, true, fmt.Errorf("%w: want a %d-byte hex seed", ErrBadIdentity, SeedSize)
	}
	if id.NowUnixNS <= 0 {
		return id, nil, nil, true, fmt.Errorf("%w: no time", ErrBadIdentity)
	}
	return id, key, seed, true, nil
}
