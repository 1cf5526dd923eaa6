package protocol

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestIdentityRoundTrip(t *testing.T) {
	key, seed := bytes.Repeat([]byte{7}, KeySize), bytes.Repeat([]byte{9}, SeedSize)
	in := Identity{ID: "vm0", Orch: "10.0.2.2:1", Key: strings.Repeat("07", KeySize), Seed: strings.Repeat("09", SeedSize), NowUnixNS: 1}
	line := EncodeIdentity(in)
	if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("not one line: %q", line)
	}
	got, k, s, ok, err := DecodeIdentity(append(bytes.TrimSuffix(line, []byte("\n")), '\r', '\n'))
	if err != nil || !ok || got != in || !bytes.Equal(k, key) || !bytes.Equal(s, seed) {
		t.Fatalf("DecodeIdentity = %+v %x %x %v %v", got, k, s, ok, err)
	}
}

func TestDecodeIdentityRefuses(t *testing.T) {
	good := Identity{ID: "vm0", Orch: "10.0.2.2:1", Key: strings.Repeat("07", KeySize), Seed: strings.Repeat("09", SeedSize), NowUnixNS: 1}
	for _, tt := range []struct {
		name   string
		line   string
		isLine bool
	}{
		{"other console output", "[    1.0] random: crng init done", false},
		{"not JSON", IdentityPrefix + "{", true},
		{"no id", string(EncodeIdentity(Identity{Orch: "h:1", Key: good.Key, Seed: good.Seed, NowUnixNS: 1})), true},
		{"short key", string(EncodeIdentity(Identity{ID: "a", Orch: "h:1", Key: "07", Seed: good.Seed, NowUnixNS: 1})), true},
		{"short seed", string(EncodeIdentity(Identity{ID: "a", Orch: "h:1", Key: good.Key, Seed: "09", NowUnixNS: 1})), true},
		{"no orchestrator", string(EncodeIdentity(Identity{ID: "a", Key: good.Key, Seed: good.Seed, NowUnixNS: 1})), true},
		{"no time", string(EncodeIdentity(Identity{ID: "a", Orch: "h:1", Key: good.Key, Seed: good.Seed})), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, ok, err := DecodeIdentity([]byte(tt.line))
			if ok != tt.isLine {
				t.Fatalf("ok = %v, want %v", ok, tt.isLine)
			}
			if tt.isLine && !errors.Is(err, ErrBadIdentity) {
				t.Fatalf("err = %v, want ErrBadIdentity", err)
			}
			if !tt.isLine && err != nil {
				t.Fatalf("err = %v for a line that is not an identity", err)
			}
		})
	}
}
