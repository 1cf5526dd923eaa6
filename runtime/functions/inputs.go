package functions

import (
	"bytes"
	"compress/zlib"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strconv"
	"strings"
)

// DefaultInputSeed is the seed the load generator uses when none is given
// (the original seeded numpy with 63302, its orchestrator port).
const DefaultInputSeed = 63302

// InputsPerFunction is how many distinct inputs the original load generator
// made for each function.
const InputsPerFunction = 10

// ZlibTexts are the English texts whose zlib compression zlib_decompress's
// generated inputs carry (public-domain texts, like the original's five).
var ZlibTexts = []string{
	"It was the best of times.\nIt was the worst of times.",
	"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum.",
	"We hold these truths to be self-evident, that all men are created equal, that they are endowed by their Creator with certain unalienable Rights, that among these are Life, Liberty and the pursuit of Happiness.--That to secure these rights, Governments are instituted among Men, deriving their just powers from the consent of the governed.",
	"Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in Liberty, and dedicated to the proposition that all men are created equal.\nNow we are engaged in a great civil war, testing whether that nation, or any nation so conceived and so dedicated, can long endure. We are met on a great battle-field of that war.",
	"Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\nRough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date;\nSometime too hot the eye of heaven shines,\nAnd often is his gold complexion dimm'd;\nAnd every fair from fair sometime declines,\nBy chance or nature's changing course untrimm'd.",
}

// RedisAccounts are the ids redis_modify's generated inputs spend from.
var RedisAccounts = []string{"Jenny", "Jack", "Joe"}

const alphanumerics = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// inputGenerators make one input of one function from a random source.
// i is the input's index (some functions cycle through fixed lists).
var inputGenerators = map[string]func(r *rand.Rand, i int) any{
	"float_operations": func(r *rand.Rand, _ int) any {
		return map[string]any{"n": randInt(r, 1, 10000)}
	},
	"cascading_sha256": cascadingInput,
	"cascading_md5":    cascadingInput,
	"matmul": func(r *rand.Rand, _ int) any {
		n := randInt(r, 2, 10)
		return map[string]any{"A": randMatrix(r, n), "B": randMatrix(r, n)}
	},
	"html_generation": func(r *rand.Rand, _ int) any {
		return map[string]any{"n": randInt(r, 1, 128)}
	},
	"pyaes": func(r *rand.Rand, _ int) any {
		k := randInt(r, 1, 10)
		return map[string]any{"data": randString(r, 16*k), "rounds": randInt(r, 1, 10000)}
	},
	"zlib_decompress": func(_ *rand.Rand, i int) any {
		return map[string]any{"data": hex.EncodeToString(zlibCompress(ZlibTexts[i%len(ZlibTexts)]))}
	},
	"regex_search": regexInput,
	"regex_match":  regexInput,
	"redis_insert": func(r *rand.Rand, _ int) any {
		// Strings, as the original load generator sent them.
		return map[string]any{
			"id":      strconv.Itoa(randInt(r, 1000000, 9999999)),
			"balance": strconv.Itoa(randInt(r, 0, 999)),
		}
	},
	"redis_modify": func(r *rand.Rand, _ int) any {
		return map[string]any{
			"id":    RedisAccounts[r.IntN(len(RedisAccounts))],
			"spend": strconv.Itoa(randInt(r, 0, 999)),
		}
	},
	"psql_inventory": func(_ *rand.Rand, _ int) any {
		return map[string]any{}
	},
	"psql_purchase": func(r *rand.Rand, _ int) any {
		return map[string]any{"id": randInt(r, 1, 60)}
	},
	"upload_file": func(_ *rand.Rand, i int) any {
		return map[string]any{"file": UploadFiles[i%len(UploadFiles)]}
	},
	"download_file": func(_ *rand.Rand, i int) any {
		return map[string]any{"file": DownloadSamples[i%len(DownloadSamples)].Name}
	},
	"upload_kafka": func(r *rand.Rand, _ int) any {
		digits := make([]string, 10)
		for j := range digits {
			digits[j] = strconv.Itoa(r.IntN(10))
		}
		return map[string]any{
			"groupID":    2,
			"consumerID": consumerID(r),
			"topic":      DefaultKafkaTopic,
			// The original's message: ten random digits joined by "Hello World ".
			"message": strings.Join(digits, "Hello World "),
		}
	},
	"read_kafka": func(r *rand.Rand, _ int) any {
		return map[string]any{"groupID": 2, "consumerID": consumerID(r), "topic": DefaultKafkaTopic}
	},
}

func cascadingInput(r *rand.Rand, _ int) any {
	return map[string]any{"data": randString(r, 64), "rounds": randInt(r, 1, 10000)}
}

func regexInput(r *rand.Rand, _ int) any {
	return map[string]any{"data": randString(r, 64), "pattern": defaultPattern}
}

// randInt returns a uniform integer in lo..hi (inclusive, like Python's
// random.randint).
func randInt(r *rand.Rand, lo, hi int) int {
	return lo + r.IntN(hi-lo+1)
}

func randString(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphanumerics[r.IntN(len(alphanumerics))]
	}
	return string(b)
}

func randMatrix(r *rand.Rand, n int) [][]float64 {
	m := make([][]float64, n)
	for i := range m {
		m[i] = make([]float64, n)
		for j := range m[i] {
			m[i][j] = r.Float64()
		}
	}
	return m
}

// consumerID makes an id shaped like the original's REST-proxy consumer
// instance ids ("br1-" and a UUID).
func consumerID(r *rand.Rand) string {
	var b [16]byte
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	h := hex.EncodeToString(b[:])
	return "br1-" + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func zlibCompress(s string) []byte {
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	w.Write([]byte(s)) // writes to a bytes.Buffer cannot fail
	w.Close()
	return b.Bytes()
}

// GenerateInputs makes perFunction inputs (f_args objects) for every
// function of the workload suite, in the shapes and ranges of the original
// load generator. The result depends only on seed and perFunction: each
// function draws from its own random stream, seeded by seed and the
// function's name, so adding a function never changes another's inputs.
func GenerateInputs(seed int64, perFunction int) map[string][]json.RawMessage {
	perFunction = max(perFunction, 0)
	out := make(map[string][]json.RawMessage, len(inputGenerators))
	for name, gen := range inputGenerators {
		r := rand.New(rand.NewPCG(uint64(seed), nameHash(name)))
		list := make([]json.RawMessage, 0, perFunction)
		for i := range perFunction {
			b, err := json.Marshal(gen(r, i))
			if err != nil {
				// Only maps of strings, numbers and float slices are
				// marshalled: this cannot happen.
				panic(fmt.Sprintf("functions: marshalling a generated %s input: %v", name, err))
			}
			list = append(list, b)
		}
		out[name] = list
	}
	return out
}

func nameHash(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}
