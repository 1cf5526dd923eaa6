package cluster

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// A Policy says what the orchestrator does with a worker of one kind when
// its job is done (see orchestrator/machine.go for the table).
type Policy struct {
	Name PolicyName
	// Pool is the number of booted, connected workers that have run
	// nothing the warm-pool policy keeps ready.
	Pool int
}

// PolicyName is one of the policies.
type PolicyName string

const (
	// PolicyOff powers a worker off after its job (the default).
	PolicyOff PolicyName = "off"
	// PolicyRebootWhileQueued reboots a worker after its job while work
	// waits, and powers it off when none does (the original MicroFaaS's).
	PolicyRebootWhileQueued PolicyName = "reboot-while-queued"
	// PolicyWarmPool powers a worker off after its job, and keeps Pool
	// freshly booted workers connected and idle.
	PolicyWarmPool PolicyName = "warm-pool"
)

// PolicyHelp lists the values ParsePolicy accepts.
const PolicyHelp = "off, reboot-while-queued or warm-pool=N (N >= 1)"

// ErrPolicy means a policy is not one of PolicyHelp.
var ErrPolicy = errors.New("unknown power policy: want " + PolicyHelp)

// ParsePolicy reads "off", "reboot-while-queued" or "warm-pool=N"; ""
// is off.
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "", string(PolicyOff):
		return Policy{Name: PolicyOff}, nil
	case string(PolicyRebootWhileQueued):
		return Policy{Name: PolicyRebootWhileQueued}, nil
	}
	if n, ok := strings.CutPrefix(s, string(PolicyWarmPool)+"="); ok {
		pool, err := strconv.Atoi(n)
		if err != nil || pool < 1 {
			return Policy{}, fmt.Errorf("%q: the pool size must be a whole number >= 1: %w", s, ErrPolicy)
		}
		return Policy{Name: PolicyWarmPool, Pool: pool}, nil
	}
	return Policy{}, fmt.Errorf("%q: %w", s, ErrPolicy)
}

// String is the policy as ParsePolicy reads it.
func (p Policy) String() string {
	switch p.Name {
	case "":
		return string(PolicyOff)
	case PolicyWarmPool:
		return fmt.Sprintf("%s=%d", p.Name, p.Pool)
	}
	return string(p.Name)
}

// UnmarshalText lets a cluster file (and flag.TextVar) hold a policy.
func (p *Policy) UnmarshalText(b []byte) error {
	v, err := ParsePolicy(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// MarshalText is String.
func (p Policy) MarshalText() ([]byte, error) { return []byte(p.String()), nil }
