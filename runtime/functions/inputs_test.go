package functions

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"testing"
	"time"
)

func TestGenerateInputsDeterministic(t *testing.T) {
	a := GenerateInputs(DefaultInputSeed, InputsPerFunction)
	b := GenerateInputs(DefaultInputSeed, InputsPerFunction)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different inputs")
	}
	c := GenerateInputs(DefaultInputSeed+1, InputsPerFunction)
	if reflect.DeepEqual(a["cascading_sha256"], c["cascading_sha256"]) {
		t.Error("different seeds, same cascading_sha256 inputs")
	}
	// A function's inputs do not depend on how many others get: the first
	// three of ten equal the three of a run asking for three.
	short := GenerateInputs(DefaultInputSeed, 3)
	for name, list := range short {
		if !reflect.DeepEqual(list, a[name][:3]) {
			t.Errorf("%s: first inputs change with perFunction", name)
		}
	}
	for _, n := range []int{0, -1} {
		if got := GenerateInputs(1, n)["matmul"]; len(got) != 0 {
			t.Errorf("perFunction %d gave %d inputs", n, len(got))
		}
	}
}

// TestGenerateInputsShapes checks the ranges of the original load generator.
func TestGenerateInputsShapes(t *testing.T) {
	in := GenerateInputs(DefaultInputSeed, 50)
	if len(in) != len(CatalogueNames()) {
		t.Fatalf("inputs for %d functions, want %d", len(in), len(CatalogueNames()))
	}
	num := func(v any) int {
		switch x := v.(type) {
		case float64:
			return int(x)
		case string:
			n, err := strconv.Atoi(x)
			if err != nil {
				t.Fatalf("%q is not a number", x)
			}
			return n
		}
		t.Fatalf("%v (%T) is not a number", v, v)
		return 0
	}
	between := func(name, key string, v any, lo, hi int) {
		if n := num(v); n < lo || n > hi {
			t.Errorf("%s: %s = %d, want %d..%d", name, key, n, lo, hi)
		}
	}
	for name, list := range in {
		if len(list) != 50 {
			t.Errorf("%s: %d inputs", name, len(list))
		}
		for _, raw := range list {
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatalf("%s: %s: %v", name, raw, err)
			}
			switch name {
			case "float_operations":
				between(name, "n", m["n"], 1, 10000)
			case "cascading_sha256", "cascading_md5":
				if len(m["data"].(string)) != 64 {
					t.Errorf("%s: data %q", name, m["data"])
				}
				between(name, "rounds", m["rounds"], 1, 10000)
			case "matmul":
				n := len(m["A"].([]any))
				if n < 2 || n > 10 || len(m["B"].([]any)) != n {
					t.Errorf("matmul: n=%d", n)
				}
			case "html_generation":
				between(name, "n", m["n"], 1, 128)
			case "pyaes":
				l := len(m["data"].(string))
				if l%16 != 0 || l < 16 || l > 160 {
					t.Errorf("pyaes: data length %d", l)
				}
				between(name, "rounds", m["rounds"], 1, 10000)
			case "regex_search", "regex_match":
				if len(m["data"].(string)) != 64 || m["pattern"] != `\d\D\d` {
					t.Errorf("%s: %v", name, m)
				}
			case "redis_insert":
				between(name, "id", m["id"], 1000000, 9999999)
				between(name, "balance", m["balance"], 0, 999)
			case "redis_modify":
				if id := m["id"]; id != "Jenny" && id != "Jack" && id != "Joe" {
					t.Errorf("redis_modify: id %v", id)
				}
				between(name, "spend", m["spend"], 0, 999)
			case "psql_purchase":
				between(name, "id", m["id"], 1, 60)
			case "upload_kafka", "read_kafka":
				if m["topic"] != DefaultKafkaTopic || m["groupID"] != 2.0 {
					t.Errorf("%s: %v", name, m)
				}
			}
		}
	}
}

// TestGeneratedInputsRun runs every generated input of the compute
// functions, and checks that every input of the service functions gets past
// argument checking (to "not configured", with no services in the Env).
func TestGeneratedInputsRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for name, list := range GenerateInputs(DefaultInputSeed, InputsPerFunction) {
		fn, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range list {
			res, err := fn(ctx, Env{}, raw)
			switch name {
			case "redis_insert", "redis_modify", "psql_inventory", "psql_purchase",
				"upload_file", "download_file", "upload_kafka", "read_kafka":
				if err == nil || errors.Is(err, ErrBadArgs) {
					t.Errorf("%s(%s): %v, want a not-configured error", name, raw, err)
				}
			default:
				if err != nil {
					t.Errorf("%s(%s): %v", name, raw, err)
				}
			}
			if name == "zlib_decompress" && err == nil {
				out, _ := hex.DecodeString(res.(map[string]any)["data"].(string))
				found := false
				for _, text := range ZlibTexts {
					found = found || bytes.Equal(out, []byte(text))
				}
				if !found {
					t.Errorf("zlib_decompress gave %q, not one of ZlibTexts", out)
				}
			}
		}
	}
}
