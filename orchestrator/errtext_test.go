package orchestrator

import (
	"errors"
	"testing"
)

// ErrText is what records, the API and experiment results show of an
// invocation's error: "" for none, else the error's text.
func TestErrText(t *testing.T) {
	var none error
	for _, tc := range []struct {
		in   error
		want string
	}{
		{none, ""},
		{errors.New("lost"), "lost"},
		{&Error{Kind: ErrTimeout, Msg: "cascading_sha256 timed out"}, "cascading_sha256 timed out"},
	} {
		if got := ErrText(tc.in); got != tc.want {
			t.Errorf("ErrText(%#v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
