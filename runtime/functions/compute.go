package functions

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"math"
	"time"
)

func init() {
	Register("float_operations", floatOperations)
	Register("cascading_sha256", cascading("cascading_sha256", sha256.New))
	Register("cascading_md5", cascading("cascading_md5", md5.New))
}

// maxRounds bounds iterated work so a malformed job cannot pin a worker; the
// original suite used 1..10000.
const maxRounds = 10_000_000

// floatOperations computes sin, cos and sqrt of 0..n-1, as the original
// suite did, and returns the latency in milliseconds.
func floatOperations(ctx context.Context, _ Env, raw json.RawMessage) (any, error) {
	var a struct {
		N *int `json:"n"`
	}
	if err := decode("float_operations", raw, &a); err != nil {
		return nil, err
	}
	if a.N == nil {
		return nil, fmt.Errorf("float_operations: missing argument n (an integer >= 0)")
	}
	if *a.N < 0 || *a.N > maxRounds {
		return nil, fmt.Errorf("float_operations: n=%d out of range 0..%d", *a.N, maxRounds)
	}
	start := time.Now()
	var sink float64
	for i := 0; i < *a.N; i++ {
		if i%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		x := float64(i)
		sink += math.Sin(x) + math.Cos(x) + math.Sqrt(x)
	}
	return map[string]any{
		"latency_ms": float64(time.Since(start).Microseconds()) / 1000,
		"checksum":   sink,
	}, nil
}

// cascading hashes the UTF-8 bytes of data, then the previous hex digest,
// rounds times in all, and returns the final hex digest.
func cascading(name string, newHash func() hash.Hash) Func {
	return func(ctx context.Context, _ Env, raw json.RawMessage) (any, error) {
		var a struct {
			Data   *string `json:"data"`
			Rounds *int    `json:"rounds"`
		}
		if err := decode(name, raw, &a); err != nil {
			return nil, err
		}
		if a.Data == nil {
			return nil, fmt.Errorf("%s: missing argument data (a string)", name)
		}
		if a.Rounds == nil {
			return nil, fmt.Errorf("%s: missing argument rounds (an integer >= 1)", name)
		}
		if *a.Rounds < 1 || *a.Rounds > maxRounds {
			return nil, fmt.Errorf("%s: rounds=%d out of range 1..%d", name, *a.Rounds, maxRounds)
		}
		return cascade(ctx, newHash, []byte(*a.Data), *a.Rounds)
	}
}

func cascade(ctx context.Context, newHash func() hash.Hash, data []byte, rounds int) (string, error) {
	h := newHash()
	buf := data
	var digest string
	for i := 0; i < rounds; i++ {
		if i%4096 == 0 && ctx.Err() != nil {
			return "", ctx.Err()
		}
		h.Reset()
		h.Write(buf)
		digest = hex.EncodeToString(h.Sum(nil))
		buf = []byte(digest)
	}
	return digest, nil
}
