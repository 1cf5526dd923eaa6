// Package state names a worker's states and the change from one to
// another: the one vocabulary the orchestrator's state machine, the energy
// accounting and the lab's run folders (timeline.csv) share, so none of them
// converts another's strings. It imports nothing of the project.
package state

import "time"

// Name is where a worker is in its life cycle; the string is what
// timeline.csv and the status API show.
type Name string

// The worker states (docs/orchestrator.md draws the machine).
const (
	Off      Name = "off"
	Booting  Name = "booting"  // powered on, not yet connected
	Idle     Name = "idle"     // connected, waiting for a job
	Working  Name = "working"  // running a job
	Stopping Name = "stopping" // told to power off, or being forced off
	Failed   Name = "failed"   // failed to boot too often; not used until reset
)

// On are the states in which a board draws more than when it is off; their
// per-board power is what energy attribution estimates.
var On = []Name{Booting, Idle, Working, Stopping}

// IsOn reports whether s is one of On.
func IsOn(s Name) bool {
	switch s {
	case Booting, Idle, Working, Stopping:
		return true
	}
	return false
}

// Change is a worker's move from one state to another, at a time on the
// orchestrator's clock (a row of timeline.csv once the next change closes
// it). Invocation is the job's id when To is Working, else "".
type Change struct {
	Worker     string
	From, To   Name
	At         time.Time
	Invocation string
}
