package rig

import (
	"testing"

	"github.com/microfaas/microfaas/cluster"
)

// The flag's policy applies to every kind; unset, the cluster file's.
func TestPolicies(t *testing.T) {
	cl := cluster.Local(1)
	if got := policies(cl, cluster.Policy{}); got[cluster.KindVM].Name != cluster.PolicyOff || got[cluster.KindBBB].Name != cluster.PolicyOff {
		t.Errorf("default: %v", got)
	}
	reboot := cluster.Policy{Name: cluster.PolicyRebootWhileQueued}
	if got := policies(cl, reboot); got[cluster.KindVM] != reboot || got[cluster.KindBBB] != reboot {
		t.Errorf("override: %v", got)
	}
}
