package cluster

import (
	"errors"
	"strings"
	"testing"
)

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Policy
		err  bool
	}{
		{"", Policy{Name: PolicyOff}, false},
		{"off", Policy{Name: PolicyOff}, false},
		{"reboot-while-queued", Policy{Name: PolicyRebootWhileQueued}, false},
		{"warm-pool=3", Policy{Name: PolicyWarmPool, Pool: 3}, false},
		{"warm-pool=0", Policy{}, true},
		{"warm-pool", Policy{}, true},
		{"warm-pool=x", Policy{}, true},
		{"reboot", Policy{}, true},
	} {
		got, err := ParsePolicy(tc.in)
		if tc.err {
			if !errors.Is(err, ErrPolicy) {
				t.Errorf("%q: err %v, want ErrPolicy", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if back, _ := ParsePolicy(got.String()); back != got {
			t.Errorf("%q: String %q does not read back", tc.in, got.String())
		}
	}
}

func TestClusterPolicies(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(good, "workers:\n", "policies: {bbb: reboot-while-queued, vm: warm-pool=2}\nworkers:\n", 1)), ".")
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Policy(KindBBB); p.Name != PolicyRebootWhileQueued {
		t.Errorf("bbb: %v", p)
	}
	if p := c.Policy(KindVM); p != (Policy{Name: PolicyWarmPool, Pool: 2}) {
		t.Errorf("vm: %v", p)
	}
	if p := Local(1).Policy(KindVM); p.Name != PolicyOff {
		t.Errorf("default: %v", p)
	}
}
