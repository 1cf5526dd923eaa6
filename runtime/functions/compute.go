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
// original suite used 1..10000. The job's deadline bounds it further.
const maxRounds = 10_000_000

// ctxCheckEvery is how many loop iterations run between two looks at the
// job's context.
const ctxCheckEvery = 4096

// latencyMillis is the elapsed time since start in milliseconds, with
// microsecond resolution.
func latencyMillis(start time.Time) float64 {
	return float64(time.Since(start).Microseconds()) / 1000
}

// floatOperations computes sin, cos and sqrt of 0..n-1, as the original
// suite did, and returns the latency in milliseconds. The checksum (the sum
// of all three values over all i) keeps the compiler from dropping the work
// and lets a caller check the result.
func floatOperations(ctx context.Context, _ Env, raw json.RawMessage) (any, error) {
	const fn = "float_operations"
	a, err := parseArgs(fn, raw)
	if err != nil {
		return nil, err
	}
	n, err := a.int("n", 0, maxRounds)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var sum float64
	for i := int64(0); i < n; i++ {
		if i%ctxCheckEvery == 0 && ctx.Err() != nil {
			return nil, fmt.Errorf("%s: stopped at i=%d of %d: %w", fn, i, n, ctx.Err())
		}
		x := float64(i)
		sum += math.Sin(x) + math.Cos(x) + math.Sqrt(x)
	}
	return map[string]any{
		"latency_ms": latencyMillis(start),
		"checksum":   sum,
	}, nil
}

// cascading hashes the UTF-8 bytes of data, then the previous (binary)
// digest, rounds times in all, and returns the final digest in hex, as the
// original suite did (hashlib.X(data).digest(), then rounds-1 more times).
func cascading(name string, newHash func() hash.Hash) Func {
	return func(ctx context.Context, _ Env, raw json.RawMessage) (any, error) {
		a, err := parseArgs(name, raw)
		if err != nil {
			return nil, err
		}
		data, err := a.str("data", maxDataBytes)
		if err != nil {
			return nil, err
		}
		rounds, err := a.int("rounds", 1, maxRounds)
		if err != nil {
			return nil, err
		}
		digest, err := cascade(ctx, newHash, []byte(data), int(rounds))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return digest, nil
	}
}

// cascade returns hex(H^rounds(data)), where each round hashes the previous
// round's binary digest.
func cascade(ctx context.Context, newHash func() hash.Hash, data []byte, rounds int) (string, error) {
	h := newHash()
	buf := data
	digest := make([]byte, 0, h.Size())
	for i := 0; i < rounds; i++ {
		if i%ctxCheckEvery == 0 && ctx.Err() != nil {
			return "", fmt.Errorf("stopped at round %d of %d: %w", i, rounds, ctx.Err())
		}
		h.Reset()
		h.Write(buf)
		digest = h.Sum(digest[:0])
		buf = digest
	}
	return hex.EncodeToString(digest), nil
}
