package functions

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/aes"
	"crypto/cipher"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"math/rand/v2"
	"regexp"
	"strconv"
	"time"
	"unicode"
)

func init() {
	Register("matmul", matmul)
	Register("html_generation", htmlGeneration)
	Register("pyaes", pyaes)
	Register("zlib_decompress", zlibDecompress)
	Register("regex_search", regexSearch)
	Register("regex_match", regexMatch)
}

const (
	// maxDataBytes bounds string arguments (data to hash, encrypt, search).
	maxDataBytes = 1 << 20
	// maxMatrixN bounds matmul's n: 1000x1000 is 2*10^9 flops, seconds on a
	// BeagleBone; the original used 2..10.
	maxMatrixN = 1000
	// maxHTMLRows is html_generation's upper bound for n, as in the original.
	maxHTMLRows = 128
	// maxPatternBytes bounds a regular expression's source.
	maxPatternBytes = 4096
	// defaultPattern is the original load generator's pattern.
	defaultPattern = `\d\D\d`
)

// MaxInflatedBytes bounds what zlib_decompress will inflate, against zip
// bombs. The result is returned in hex inside a JSON line, so the worker
// holds about five times this much at once; 16 MiB keeps that well inside a
// BeagleBone Black's 512 MiB.
const MaxInflatedBytes = 16 << 20

// ------------------------------------------------------------------ matmul

// matmul multiplies two n×n matrices (A·B, a plain triple loop) and returns
// the latency, and the product if return_product is true.
func matmul(ctx context.Context, _ Env, raw json.RawMessage) (any, error) {
	const fn = "matmul"
	a, err := parseArgs(fn, raw)
	if err != nil {
		return nil, err
	}
	A, err := a.matrix("A", maxMatrixN)
	if err != nil {
		return nil, err
	}
	B, err := a.matrix("B", maxMatrixN)
	if err != nil {
		return nil, err
	}
	if len(A) != len(B) {
		return nil, argErrorf(fn, "B", "is %dx%d but A is %dx%d: both must be n×n with the same n", len(B), len(B), len(A), len(A))
	}
	wantProduct, err := a.optBool("return_product", false)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	C, err := multiply(ctx, A, B)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	res := map[string]any{"latency_ms": latencyMillis(start), "n": len(A)}
	if wantProduct {
		res["product"] = C
	}
	return res, nil
}

// multiply returns A·B for square matrices of the same size.
func multiply(ctx context.Context, A, B [][]float64) ([][]float64, error) {
	n := len(A)
	C := make([][]float64, n)
	for i := range n {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("stopped at row %d of %d: %w", i, n, ctx.Err())
		}
		row := make([]float64, n)
		for k := range n {
			aik := A[i][k]
			bk := B[k]
			for j := range n {
				row[j] += aik * bk[j]
			}
		}
		C[i] = row
	}
	return C, nil
}

// --------------------------------------------------------- html_generation

// htmlGeneration builds an HTML table of n random byte values (0..255) as
// characters and their codes, as the original did. Characters are escaped;
// control characters, which have no printable form, leave their cell empty.
// An optional seed makes the table reproducible; the seed used is returned.
func htmlGeneration(ctx context.Context, _ Env, raw json.RawMessage) (any, error) {
	const fn = "html_generation"
	a, err := parseArgs(fn, raw)
	if err != nil {
		return nil, err
	}
	n, err := a.int("n", 1, maxHTMLRows)
	if err != nil {
		return nil, err
	}
	var seed uint64
	if v := a.get("seed"); v != nil {
		s, err := a.int("seed", 0, 1<<53) // exact in a JSON number
		if err != nil {
			return nil, err
		}
		seed = uint64(s)
	} else {
		// From the kernel, not math/rand's runtime state: a worker restored
		// from a snapshot has the same runtime state as every other restore.
		var b [8]byte
		crand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:]) >> 11
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	return map[string]any{"html": htmlTable(rand.New(rand.NewPCG(seed, 0x4d6963726f466161)), int(n)), "seed": seed}, nil
}

func htmlTable(r *rand.Rand, n int) string {
	var b bytes.Buffer
	b.WriteString("<html><table><tr><th>Char</th><th>ASCII</th></tr>")
	for range n {
		code := r.IntN(256)
		b.WriteString("<tr><td>")
		if ch := rune(code); unicode.IsPrint(ch) {
			b.WriteString(html.EscapeString(string(ch)))
		}
		b.WriteString("</td><td>")
		b.WriteString(strconv.Itoa(code))
		b.WriteString("</td></tr>")
	}
	b.WriteString("</table></html>")
	return b.String()
}

// ------------------------------------------------------------------- pyaes

// PyAESKey is the fixed AES-128 key of the original suite's pyaes function
// (the worker's MicroPython workloads.py: b'\xa1\xf6%\x8c\x87}_\xcd\x89dHE8\xbf\xc9,').
var PyAESKey = [16]byte{0xa1, 0xf6, 0x25, 0x8c, 0x87, 0x7d, 0x5f, 0xcd, 0x89, 0x64, 0x48, 0x45, 0x38, 0xbf, 0xc9, 0x2c}

// pyaes encrypts data with AES-128-ECB rounds times, then decrypts it rounds
// times, and returns the latency and the plaintext, which must equal data.
func pyaes(ctx context.Context, _ Env, raw json.RawMessage) (any, error) {
	const fn = "pyaes"
	a, err := parseArgs(fn, raw)
	if err != nil {
		return nil, err
	}
	data, err := a.str("data", maxDataBytes)
	if err != nil {
		return nil, err
	}
	if len(data) == 0 || len(data)%aes.BlockSize != 0 {
		return nil, argErrorf(fn, "data", "%d bytes long, want a positive multiple of %d", len(data), aes.BlockSize)
	}
	rounds, err := a.int("rounds", 1, maxRounds)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(PyAESKey[:])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	start := time.Now()
	buf := []byte(data)
	if err := ecbRounds(ctx, block, buf, int(rounds), true); err != nil {
		return nil, fmt.Errorf("%s: encrypting: %w", fn, err)
	}
	if err := ecbRounds(ctx, block, buf, int(rounds), false); err != nil {
		return nil, fmt.Errorf("%s: decrypting: %w", fn, err)
	}
	latency := latencyMillis(start)
	if string(buf) != data {
		return nil, fmt.Errorf("%s: decrypted text differs from the input (cipher fault)", fn)
	}
	return map[string]any{"latency_ms": latency, "plaintext": string(buf)}, nil
}

// ecbRounds encrypts (or decrypts) buf in place in ECB mode, rounds times.
// len(buf) must be a multiple of the block size.
func ecbRounds(ctx context.Context, block cipher.Block, buf []byte, rounds int, encrypt bool) error {
	bs := block.BlockSize()
	// Check the context about every 64 KiB of work.
	every := max(1, (64<<10)/len(buf))
	for r := 0; r < rounds; r++ {
		if r%every == 0 && ctx.Err() != nil {
			return fmt.Errorf("stopped at round %d of %d: %w", r, rounds, ctx.Err())
		}
		for off := 0; off < len(buf); off += bs {
			if encrypt {
				block.Encrypt(buf[off:off+bs], buf[off:off+bs])
			} else {
				block.Decrypt(buf[off:off+bs], buf[off:off+bs])
			}
		}
	}
	return nil
}

// --------------------------------------------------------- zlib_decompress

// zlibDecompress inflates a hex-encoded zlib stream and returns the result in
// hex, refusing to inflate more than MaxInflatedBytes.
func zlibDecompress(ctx context.Context, _ Env, raw json.RawMessage) (any, error) {
	const fn = "zlib_decompress"
	a, err := parseArgs(fn, raw)
	if err != nil {
		return nil, err
	}
	h, err := a.str("data", 2*MaxInflatedBytes)
	if err != nil {
		return nil, err
	}
	if h == "" {
		return nil, argErrorf(fn, "data", "empty (want hex of a zlib stream)")
	}
	compressed, err := hex.DecodeString(h)
	if err != nil {
		return nil, argErrorf(fn, "data", "invalid hex: %v", err)
	}
	out, err := inflate(ctx, compressed, MaxInflatedBytes)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", fn, err)
		}
		return nil, argErrorf(fn, "data", "%v", err)
	}
	return map[string]any{"data": hex.EncodeToString(out)}, nil
}

// inflate decompresses one zlib stream of at most limit bytes; trailing
// bytes after the stream are an error.
func inflate(ctx context.Context, compressed []byte, limit int) ([]byte, error) {
	src := bytes.NewReader(compressed)
	zr, err := zlib.NewReader(src)
	if err != nil {
		return nil, fmt.Errorf("not a zlib stream: %w", err)
	}
	defer zr.Close()
	var out bytes.Buffer
	chunk := make([]byte, 64<<10)
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("stopped after %d bytes: %w", out.Len(), err)
		}
		n, rerr := zr.Read(chunk)
		if out.Len()+n > limit {
			return nil, fmt.Errorf("inflates to more than %d bytes (limit)", limit)
		}
		out.Write(chunk[:n])
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("corrupt zlib stream after %d bytes: %w", out.Len(), rerr)
		}
	}
	if src.Len() > 0 {
		return nil, fmt.Errorf("%d bytes of trailing data after the zlib stream", src.Len())
	}
	return out.Bytes(), nil
}

// ------------------------------------------------------------------- regex

// regexArgs reads data and pattern (default \d\D\d) and compiles the pattern
// with Go's regexp package (RE2 syntax, linear time).
func regexArgs(fn string, raw json.RawMessage) (string, *regexp.Regexp, error) {
	a, err := parseArgs(fn, raw)
	if err != nil {
		return "", nil, err
	}
	data, err := a.str("data", maxDataBytes)
	if err != nil {
		return "", nil, err
	}
	pattern, err := a.optStr("pattern", defaultPattern, maxPatternBytes)
	if err != nil {
		return "", nil, err
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return "", nil, argErrorf(fn, "pattern", "invalid regular expression: %v", err)
	}
	return data, re, nil
}

// regexSearch returns the leftmost match of pattern in data, or null.
func regexSearch(ctx context.Context, _ Env, raw json.RawMessage) (any, error) {
	const fn = "regex_search"
	data, re, err := regexArgs(fn, raw)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	loc := re.FindStringIndex(data)
	if loc == nil {
		return nil, nil
	}
	return data[loc[0]:loc[1]], nil
}

// regexMatch reports whether pattern matches at the start of data (Python's
// re.match: anchored at the start, not at the end).
func regexMatch(ctx context.Context, _ Env, raw json.RawMessage) (any, error) {
	const fn = "regex_match"
	data, re, err := regexArgs(fn, raw)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	// The leftmost match starts at 0 exactly when a match at the start
	// exists. The pattern is not rewritten (wrapping it in \A(?:...) would
	// change the meaning of patterns with unbalanced parentheses).
	loc := re.FindStringIndex(data)
	return loc != nil && loc[0] == 0, nil
}
