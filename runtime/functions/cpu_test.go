package functions

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/aes"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func TestMatmul(t *testing.T) {
	res, err := call(t, "matmul", `{"A": [[1,2],[3,4]], "B": [[5,6],[7,8]], "return_product": true}`)
	if err != nil {
		t.Fatal(err)
	}
	got := res.(map[string]any)["product"].([][]float64)
	want := [][]float64{{19, 22}, {43, 50}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("product = %v, want %v", got, want)
	}

	// Random matrices against a reference that works column by column
	// with explicit dot products (a different loop order than multiply).
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 3, 10, 37} {
		A, B := randMatrix(r, n), randMatrix(r, n)
		raw, _ := json.Marshal(map[string]any{"A": A, "B": B, "return_product": true})
		res, err := call(t, "matmul", string(raw))
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		C := res.(map[string]any)["product"].([][]float64)
		for j := 0; j < n; j++ {
			for i := 0; i < n; i++ {
				var dot float64
				for k := 0; k < n; k++ {
					dot += A[i][k] * B[k][j]
				}
				if math.Abs(C[i][j]-dot) > 1e-9 {
					t.Fatalf("n=%d: C[%d][%d] = %v, want %v", n, i, j, C[i][j], dot)
				}
			}
		}
	}

	res, err = call(t, "matmul", `{"A": [[1]], "B": [[2]]}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.(map[string]any)["product"]; ok {
		t.Error("product returned without return_product")
	}

	runBadArgs(t, "matmul", []badArgCase{
		{"no A", `{"B": [[1]]}`, "argument A: missing"},
		{"no B", `{"A": [[1]]}`, "argument B: missing"},
		{"A not array", `{"A": 3, "B": [[1]]}`, "got a number"},
		{"empty", `{"A": [], "B": []}`, "empty matrix"},
		{"row not array", `{"A": [1, 2], "B": [[1]]}`, "row 0: got a number"},
		{"non-square", `{"A": [[1,2],[3]], "B": [[1,2],[3,4]]}`, "not square: row 1 has 1 numbers, want 2"},
		{"wide", `{"A": [[1,2,3],[3,4,5]], "B": [[1,2],[3,4]]}`, "not square: row 0 has 3"},
		{"mismatched", `{"A": [[1,2],[3,4]], "B": [[1]]}`, "argument B: is 1x1 but A is 2x2"},
		{"string element", `{"A": [["1"]], "B": [[1]]}`, "want an array of numbers"},
		{"null row", `{"A": [null], "B": [[1]]}`, "row 0: got null"},
		{"too big", `{"A": [` + strings.Repeat("[],", 1000) + `[]], "B": [[1]]}`, "1001 rows, at most 1000"},
		{"bad flag", `{"A": [[1]], "B": [[1]], "return_product": "yes"}`, "want true or false"},
	})
}

// htmlDoc is the table html_generation makes, read back with encoding/xml.
type htmlDoc struct {
	Rows []struct {
		Headers []string `xml:"th"`
		Cells   []string `xml:"td"`
	} `xml:"table>tr"`
}

func TestHTMLGeneration(t *testing.T) {
	for _, n := range []int{1, 7, 128} {
		res, err := call(t, "html_generation", fmt.Sprintf(`{"n": %d, "seed": 42}`, n))
		if err != nil {
			t.Fatal(err)
		}
		page := res.(map[string]any)["html"].(string)
		var doc htmlDoc
		if err := xml.Unmarshal([]byte(page), &doc); err != nil {
			t.Fatalf("n=%d: output is not well-formed: %v\n%s", n, err, page)
		}
		if len(doc.Rows) != n+1 {
			t.Fatalf("n=%d: %d rows, want %d (a header and n)", n, len(doc.Rows), n+1)
		}
		if fmt.Sprint(doc.Rows[0].Headers) != "[Char ASCII]" {
			t.Errorf("header row %v", doc.Rows[0].Headers)
		}
		for _, row := range doc.Rows[1:] {
			if len(row.Cells) != 2 {
				t.Fatalf("row %v has %d cells", row, len(row.Cells))
			}
			code, err := strconv.Atoi(row.Cells[1])
			if err != nil || code < 0 || code > 255 {
				t.Fatalf("code cell %q", row.Cells[1])
			}
			if ch := row.Cells[0]; ch != "" && ch != string(rune(code)) {
				t.Errorf("character cell %q does not match code %d", ch, code)
			}
		}
		// The same seed gives the same table.
		again, _ := call(t, "html_generation", fmt.Sprintf(`{"n": %d, "seed": 42}`, n))
		if again.(map[string]any)["html"] != page {
			t.Errorf("n=%d: same seed, different table", n)
		}
	}
	// Without a seed the seed used is returned and reproduces the table.
	res, err := call(t, "html_generation", `{"n": 20}`)
	if err != nil {
		t.Fatal(err)
	}
	m := res.(map[string]any)
	again, _ := call(t, "html_generation", fmt.Sprintf(`{"n": 20, "seed": %d}`, m["seed"]))
	if again.(map[string]any)["html"] != m["html"] {
		t.Error("returned seed does not reproduce the table")
	}
	runBadArgs(t, "html_generation", []badArgCase{
		{"missing", `{}`, "argument n: missing"},
		{"zero", `{"n": 0}`, "out of range 1..128"},
		{"too many", `{"n": 129}`, "out of range 1..128"},
		{"string", `{"n": "x"}`, "not an integer"},
		{"bad seed", `{"n": 1, "seed": -1}`, "argument seed"},
	})
}

func TestAESVectors(t *testing.T) {
	// FIPS-197 appendix C.1 (AES-128) through the ECB loop.
	key, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f")
	plain, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	buf := append([]byte(nil), plain...)
	if err := ecbRounds(context.Background(), block, buf, 1, true); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(buf); got != "69c4e0d86a7b0430d8cdb78070b4c55a" {
		t.Errorf("FIPS-197 C.1: got %s", got)
	}
	// The original's key, checked with openssl enc -aes-128-ecb -nopad
	// (one and two rounds over two blocks).
	block, _ = aes.NewCipher(PyAESKey[:])
	for rounds, want := range map[int]string{
		1: "01e21175f59091ff364c14a73f1d65ffb637c95ca9face725a1c3c46f57cdab9",
		2: "f84fd6d6c7e72774a53c8c60bb3d8f6ea2399a843aa491c02f3c6fc3d5c4784c",
	} {
		buf := []byte("0123456789abcdefMicroFaaS-BBB-16")
		ecbRounds(context.Background(), block, buf, rounds, true)
		if got := hex.EncodeToString(buf); got != want {
			t.Errorf("%d rounds with PyAESKey: got %s, want %s", rounds, got, want)
		}
	}
}

func TestPyAES(t *testing.T) {
	for _, data := range []string{"0123456789abcdef", strings.Repeat("MicroFaaS-BBB-16", 10)} {
		for _, rounds := range []int{1, 2, 100} {
			res, err := call(t, "pyaes", fmt.Sprintf(`{"data": %q, "rounds": %d}`, data, rounds))
			if err != nil {
				t.Fatal(err)
			}
			if got := res.(map[string]any)["plaintext"]; got != data {
				t.Errorf("plaintext %q, want %q", got, data)
			}
		}
	}
	runBadArgs(t, "pyaes", []badArgCase{
		{"no data", `{"rounds": 1}`, "argument data: missing"},
		{"empty", `{"data": "", "rounds": 1}`, "0 bytes long, want a positive multiple of 16"},
		{"15 bytes", `{"data": "0123456789abcde", "rounds": 1}`, "15 bytes long"},
		{"17 bytes", `{"data": "0123456789abcdefg", "rounds": 1}`, "17 bytes long"},
		{"no rounds", `{"data": "0123456789abcdef"}`, "argument rounds: missing"},
		{"zero rounds", `{"data": "0123456789abcdef", "rounds": 0}`, "out of range"},
		{"array", `{"data": ["0123456789abcdef"], "rounds": 1}`, "got an array, want a string"},
	})
}

func zlibHex(b []byte) string {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return hex.EncodeToString(buf.Bytes())
}

func TestZlibDecompress(t *testing.T) {
	text := "It was the best of times.\nIt was the worst of times."
	for _, tc := range []struct{ name, in, want string }{
		// Compressed by Python's zlib.compress, not by Go.
		{"python", "789cf32c51284f2c5628c94855484a2d2e51c84f5328c9cc4d2dd6e3f244c894e717214b0100da1e1214", hex.EncodeToString([]byte(text))},
		{"python a", "789c4b040000620062", "61"},
		{"python empty", "789c030000000001", ""},
		{"uppercase hex", strings.ToUpper("789c4b040000620062"), "61"},
		{"go 1 MiB", zlibHex(bytes.Repeat([]byte("MicroFaaS "), 100000)), hex.EncodeToString(bytes.Repeat([]byte("MicroFaaS "), 100000))},
	} {
		res, err := call(t, "zlib_decompress", fmt.Sprintf(`{"data": %q}`, tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := res.(map[string]any)["data"]; got != tc.want {
			t.Errorf("%s: got %.80s, want %.80s", tc.name, got, tc.want)
		}
	}
	good := "789c4b040000620062"
	bomb := zlibHex(make([]byte, MaxInflatedBytes+1))
	runBadArgs(t, "zlib_decompress", []badArgCase{
		{"missing", `{}`, "argument data: missing"},
		{"empty", `{"data": ""}`, "empty"},
		{"odd hex", `{"data": "789"}`, "invalid hex"},
		{"not hex", `{"data": "zz"}`, "invalid hex"},
		{"not zlib", `{"data": "00112233"}`, "not a zlib stream"},
		{"truncated", `{"data": "` + good[:len(good)-4] + `"}`, "corrupt zlib stream"},
		{"bad checksum", `{"data": "` + good[:len(good)-2] + `63"}`, "corrupt zlib stream"},
		{"trailing", `{"data": "` + good + `00"}`, "1 bytes of trailing data"},
		{"bomb", `{"data": "` + bomb + `"}`, fmt.Sprintf("more than %d bytes", MaxInflatedBytes)},
		{"number", `{"data": 789}`, "want a string"},
	})
	// Exactly the limit is fine.
	res, err := call(t, "zlib_decompress", `{"data": "`+zlibHex(make([]byte, MaxInflatedBytes))+`"}`)
	if err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	if got := len(res.(map[string]any)["data"].(string)); got != 2*MaxInflatedBytes {
		t.Errorf("at the limit: %d hex digits", got)
	}
}

func TestInflateReadsAll(t *testing.T) {
	// inflate against io.ReadAll on a plain zlib reader.
	r := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 300000)
	for i := range data {
		data[i] = byte(r.IntN(16))
	}
	raw, _ := hex.DecodeString(zlibHex(data))
	got, err := inflate(context.Background(), raw, len(data))
	if err != nil {
		t.Fatal(err)
	}
	zr, _ := zlib.NewReader(bytes.NewReader(raw))
	want, _ := io.ReadAll(zr)
	if !bytes.Equal(got, want) || !bytes.Equal(got, data) {
		t.Error("inflate differs from zlib.NewReader + io.ReadAll")
	}
}

func TestRegex(t *testing.T) {
	for _, tc := range []struct {
		args       string
		search     any
		matchStart bool
	}{
		{`{"data": "ab1c2de"}`, "1c2", false},
		{`{"data": "1c2de"}`, "1c2", true},
		{`{"data": "abcdef"}`, nil, false},
		{`{"data": "1-2", "pattern": "\\d\\D\\d"}`, "1-2", true},
		{`{"data": "xxab", "pattern": "a|xx"}`, "xx", true},
		{`{"data": "hello world", "pattern": "o w"}`, "o w", false},
		{`{"data": "", "pattern": ""}`, "", true},
		{`{"data": "abc", "pattern": "(?m)^b"}`, nil, false},
		{`{"data": "a\nb", "pattern": "(?m)^b"}`, "b", false},
		// RE2: \d is ASCII only (Python's re would match the Arabic-Indic digit).
		{`{"data": "\u0661x2"}`, nil, false},
	} {
		got, err := call(t, "regex_search", tc.args)
		if err != nil {
			t.Fatalf("regex_search(%s): %v", tc.args, err)
		}
		if got != tc.search {
			t.Errorf("regex_search(%s) = %#v, want %#v", tc.args, got, tc.search)
		}
		got, err = call(t, "regex_match", tc.args)
		if err != nil {
			t.Fatalf("regex_match(%s): %v", tc.args, err)
		}
		if got != tc.matchStart {
			t.Errorf("regex_match(%s) = %v, want %v", tc.args, got, tc.matchStart)
		}
	}
	for _, fn := range []string{"regex_search", "regex_match"} {
		runBadArgs(t, fn, []badArgCase{
			{"no data", `{"pattern": "a"}`, "argument data: missing"},
			{"bad pattern", `{"data": "a", "pattern": "(a"}`, "argument pattern: invalid regular expression"},
			{"backreference", `{"data": "aa", "pattern": "(a)\\1"}`, "invalid regular expression"},
			{"pattern number", `{"data": "a", "pattern": 1}`, "got a number, want a string"},
			{"long pattern", `{"data": "a", "pattern": "` + strings.Repeat("a", maxPatternBytes+1) + `"}`, "at most 4096 allowed"},
		})
	}
}
