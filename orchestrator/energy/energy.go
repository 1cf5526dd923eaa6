// Package energy measures and attributes the energy a MicroFaaS cluster uses.
//
// A Meter (WattsUp on the power strip, RAPL or hwmon in sysfs, or the
// CPU-time model for QEMU workers) produces timestamped power samples.
// Attribute combines those samples with every worker's state timeline and
// splits the meter's total into joules per worker and state, joules per
// invocation (boot, exec, shutdown, share of idle), and an unattributed
// remainder (baseline, sessions that ran no invocation, model residual), so
// that per-invocation joules plus the unattributed part add up to the meter's
// total.
package energy

import (
	"context"
	"strings"
	"time"
)

// Sample is one power reading.
//
// Watts is the average power over the interval that ends at At and starts at
// the previous sample of the same series; a series' first sample only marks
// its start. Cumulative-energy meters (RAPL) report the average over their
// polling interval, so integrating samples this way gives their exact energy.
type Sample struct {
	At     time.Time
	Watts  float64
	Worker string // the board or VM this reading covers; "" for the whole meter (strip or host)
	Source string // e.g. "measured:wattsup", "model:cpu-time"
}

// Meter is a source of power samples.
type Meter interface {
	// Run reads the meter until ctx is cancelled, calling emit for every
	// sample (from Run's goroutine, in time order per series). It returns
	// ctx's error once cancelled, or an error that retrying cannot fix.
	Run(ctx context.Context, emit func(Sample)) error
	// Source names the meter for outputs: "measured:..." or "model:...".
	Source() string
}

// IsModel reports whether a source is a model rather than a measurement;
// every output must then say "model".
func IsModel(source string) bool { return strings.HasPrefix(source, "model:") }

// Label is how outputs name a source's kind: "model" or "measured".
func Label(source string) string {
	if IsModel(source) {
		return "model"
	}
	return "measured"
}
