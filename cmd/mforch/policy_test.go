package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/cluster"
)

// --policy fills the rig's policy; a bad value says what is allowed.
func TestPolicyFlag(t *testing.T) {
	for _, tc := range []struct {
		arg     string
		want    cluster.Policy
		wantErr bool
	}{
		{"", cluster.Policy{}, false}, // unset: the cluster file's
		{"--policy=reboot-while-queued", cluster.Policy{Name: cluster.PolicyRebootWhileQueued}, false},
		{"--policy=warm-pool=2", cluster.Policy{Name: cluster.PolicyWarmPool, Pool: 2}, false},
		{"--policy=sometimes", cluster.Policy{}, true},
	} {
		var c clusterFlags
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.register(fs)
		var args []string
		if tc.arg != "" {
			args = []string{tc.arg}
		}
		err := fs.Parse(args)
		if tc.wantErr {
			if err == nil || !strings.Contains(err.Error(), cluster.PolicyHelp) {
				t.Errorf("%s: err %v, want one listing %s", tc.arg, err, cluster.PolicyHelp)
			}
			continue
		}
		if err != nil || c.cfg.Policy != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.arg, c.cfg.Policy, err, tc.want)
		}
	}
}
