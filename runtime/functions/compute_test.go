package functions

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// call runs a registered function with JSON arguments.
func call(t *testing.T, name, args string) (any, error) {
	t.Helper()
	return callEnv(t, Env{}, name, args)
}

func callEnv(t *testing.T, env Env, name, args string) (any, error) {
	t.Helper()
	fn, err := Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return fn(ctx, env, json.RawMessage(args))
}

// badArgCase is one invalid input and a fragment of the error it must give.
type badArgCase struct {
	name, args, wantErr string
}

func runBadArgs(t *testing.T, fn string, cases []badArgCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := call(t, fn, tc.args)
			if err == nil {
				t.Fatalf("%s(%s) = %v, want an error containing %q", fn, tc.args, res, tc.wantErr)
			}
			if !errors.Is(err, ErrBadArgs) {
				t.Errorf("%s(%s): error %q does not match ErrBadArgs", fn, tc.args, err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), fn+": ") {
				t.Errorf("%s(%s): error %q, want it to start with %q and contain %q", fn, tc.args, err, fn+": ", tc.wantErr)
			}
		})
	}
}

func TestFloatOperations(t *testing.T) {
	// Python: sum(sin(i)+cos(i)+sqrt(i) for i in range(1000)).
	for _, tc := range []struct {
		args string
		want float64
	}{
		{`{"n": 0}`, 0},
		{`{"n": 1}`, 1}, // sin 0 + cos 0 + sqrt 0
		{`{"n": 2}`, 1 + math.Sin(1) + math.Cos(1) + 1}, // plus i=1
		{`{"n": 1000}`, 21066.795807857616},
		{`{"n": "1000"}`, 21066.795807857616}, // integers may come as strings
	} {
		res, err := call(t, "float_operations", tc.args)
		if err != nil {
			t.Fatalf("float_operations(%s): %v", tc.args, err)
		}
		m := res.(map[string]any)
		if got := m["checksum"].(float64); math.Abs(got-tc.want) > 1e-9*math.Max(1, math.Abs(tc.want)) {
			t.Errorf("float_operations(%s) checksum = %v, want %v", tc.args, got, tc.want)
		}
		if lat := m["latency_ms"].(float64); lat < 0 {
			t.Errorf("negative latency %v", lat)
		}
	}
	runBadArgs(t, "float_operations", []badArgCase{
		{"missing", `{}`, "argument n: missing"},
		{"null", `null`, "argument n: missing"},
		{"string", `{"n": "ten"}`, `"ten" is not an integer`},
		{"fraction", `{"n": 1.5}`, "not an integer"},
		{"bool", `{"n": true}`, "got a boolean, want an integer"},
		{"negative", `{"n": -1}`, "out of range"},
		{"huge", `{"n": 1e300}`, "not an integer"},
		{"array args", `[1]`, "want a JSON object, got an array"},
		{"broken json", `{"n": `, "not a valid JSON object"},
	})
}

func TestCascading(t *testing.T) {
	// Digests computed independently (Python hashlib and openssl dgst):
	// round 1 hashes "abc", each further round the previous binary digest.
	for _, tc := range []struct {
		fn, args, want string
	}{
		{"cascading_sha256", `{"data": "abc", "rounds": 1}`, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"cascading_sha256", `{"data": "abc", "rounds": 2}`, "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358"},
		{"cascading_sha256", `{"data": "abc", "rounds": 3}`, "f2a778f1a6ed3d5bc59a5d79104c598f3f07093f240ca4e91333fb09ed4f36da"},
		{"cascading_sha256", `{"data": "abc", "rounds": 1000}`, "fc8a6b86a13f71cd9a67f558ab6fd82a3dd89186163a017ed8051acf6d3f8f99"},
		{"cascading_md5", `{"data": "abc", "rounds": 1}`, "900150983cd24fb0d6963f7d28e17f72"},
		{"cascading_md5", `{"data": "abc", "rounds": 2}`, "af5da9f45af7a300e3aded972f8ff687"},
		{"cascading_md5", `{"data": "abc", "rounds": 3}`, "8f354f270114bc87029306db6b405e63"},
		{"cascading_md5", `{"data": "abc", "rounds": "1000"}`, "1375514e02c36aae265b2fe20ccadafb"},
		{"cascading_md5", `{"data": "", "rounds": 1}`, "d41d8cd98f00b204e9800998ecf8427e"},
	} {
		res, err := call(t, tc.fn, tc.args)
		if err != nil {
			t.Fatalf("%s(%s): %v", tc.fn, tc.args, err)
		}
		if res != tc.want {
			t.Errorf("%s(%s) = %v, want %s", tc.fn, tc.args, res, tc.want)
		}
	}
	for _, fn := range []string{"cascading_sha256", "cascading_md5"} {
		runBadArgs(t, fn, []badArgCase{
			{"no data", `{"rounds": 1}`, "argument data: missing"},
			{"no rounds", `{"data": "x"}`, "argument rounds: missing"},
			{"data number", `{"data": 5, "rounds": 1}`, "got a number, want a string"},
			{"rounds zero", `{"data": "x", "rounds": 0}`, "out of range 1.."},
			{"rounds too many", `{"data": "x", "rounds": 10000001}`, "out of range"},
			{"rounds object", `{"data": "x", "rounds": {}}`, "got an object"},
		})
	}
}

func TestCancellation(t *testing.T) {
	// Heavy inputs under a short deadline return the context's error quickly.
	heavy := map[string]string{
		"float_operations": `{"n": 10000000}`,
		"cascading_sha256": `{"data": "x", "rounds": 10000000}`,
		"cascading_md5":    `{"data": "x", "rounds": 10000000}`,
		"pyaes":            `{"data": "` + strings.Repeat("0123456789abcdef", 4096) + `", "rounds": 10000000}`,
	}
	for name, args := range heavy {
		t.Run(name, func(t *testing.T) {
			fn, _ := Lookup(name)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := fn(ctx, Env{}, json.RawMessage(args))
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want context.DeadlineExceeded", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v after a 20ms deadline", d)
			}
		})
	}
	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for _, name := range []string{"matmul", "html_generation", "zlib_decompress", "regex_search", "regex_match"} {
			fn, _ := Lookup(name)
			args := map[string]string{
				"matmul":          `{"A": [[1]], "B": [[2]]}`,
				"html_generation": `{"n": 3}`,
				"zlib_decompress": `{"data": "789c4b040000620062"}`,
				"regex_search":    `{"data": "a1b2"}`,
				"regex_match":     `{"data": "a1b2"}`,
			}[name]
			if _, err := fn(ctx, Env{}, json.RawMessage(args)); !errors.Is(err, context.Canceled) {
				t.Errorf("%s on a cancelled context: err = %v, want context.Canceled", name, err)
			}
		}
	})
}
