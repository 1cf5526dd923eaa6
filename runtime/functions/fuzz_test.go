package functions

import (
	"context"
	"encoding/json"
	"testing"
	"time"
)

// FuzzFunctions calls every function with arbitrary arguments. No input may
// make a function panic, and a function must return within its deadline.
// Service functions get settings that point nowhere reachable only after
// their arguments pass, and no service at all here, so fuzzing never touches
// the network; their argument parsing is what is fuzzed.
//
//	go test -run '^$' -fuzz FuzzFunctions -fuzztime 10s ./runtime/functions/
func FuzzFunctions(f *testing.F) {
	names := Names()
	seeds := []string{
		``, `null`, `{}`, `[]`, `"x"`, `1`, `{"n": 5}`, `{"n": "5"}`, `{"n": -1}`, `{"n": 1e400}`,
		`{"data": "abc", "rounds": 3}`, `{"data": "0123456789abcdef", "rounds": 2}`,
		`{"A": [[1,2],[3,4]], "B": [[5,6],[7,8]], "return_product": true}`, `{"A": [[1],[2,3]], "B": [[1]]}`,
		`{"A": [null], "B": [[]]}`, `{"n": 128, "seed": 7}`, `{"data": "789c4b040000620062"}`,
		`{"data": "zz"}`, `{"data": "a1b2c3", "pattern": "\\d\\D\\d"}`, `{"data": "x", "pattern": "(("}`,
		`{"id": "Joe", "spend": "12"}`, `{"id": 1234567, "balance": "999"}`, `{"id": 61}`,
		`{"file": "hosts"}`, `{"file": "../etc/passwd"}`, `{"file": ".."}`,
		`{"topic": "SampleTopic", "message": "m", "groupID": 2}`, `{"topic": "bad topic!"}`,
		`{"groupID": {}, "max": 0, "wait_ms": -1}`,
	}
	for i := range names {
		for _, s := range seeds {
			f.Add(uint8(i), []byte(s))
		}
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, which uint8, raw []byte) {
		name := names[int(which)%len(names)]
		fn, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		res, err := fn(ctx, Env{EtcDir: dir, DownloadDir: dir}, json.RawMessage(raw))
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s(%q) took %v with a 200ms deadline", name, raw, d)
		}
		if err == nil {
			if _, merr := json.Marshal(res); merr != nil {
				t.Errorf("%s(%q): result %v does not encode to JSON: %v", name, raw, res, merr)
			}
		} else if err.Error() == "" {
			t.Errorf("%s(%q): empty error text", name, raw)
		}
	})
}
