package cluster

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Meter drivers.
const (
	DriverWattsUp = "wattsup"  // WattsUp Pro/.net on a serial port
	DriverRAPL    = "rapl"     // Linux powercap RAPL counters of the host
	DriverHwmon   = "hwmon"    // Linux hwmon power sensors, one per board
	DriverCPUTime = "cpu-time" // no meter: CPU time of each QEMU worker times a per-core power (a model)
)

// Meter is the cluster file's "meter:" section (orchestrator/energy uses it
// as energy.Config): which meter, where, how
// often, and what it covers.
//
//	meter:
//	  driver: wattsup           # wattsup | rapl | hwmon | cpu-time
//	  device: /dev/ttyUSB0      # wattsup: the meter's serial port
//	  interval: 1s              # sampling interval (wattsup: whole seconds)
//	  covers: strip             # strip | host | board:<worker id>
//	  states: states.yaml       # optional: per-state model from `mforch meter calibrate`
//	  # hwmon: one sensor per board (chip/label, chip/powerN or hwmonN/powerN)
//	  sensors: {bbb0: ina226/bbb0, bbb1: ina226/bbb1}
//	  # cpu-time: the host's power model
//	  model: {idle_watts: 45, watts_per_core: 9.5}
type Meter struct {
	Driver   string            `yaml:"driver"`
	Device   string            `yaml:"device,omitempty"`
	Path     string            `yaml:"path,omitempty"` // sysfs root for rapl/hwmon (default /sys), /proc root for cpu-time (default /proc)
	Interval time.Duration     `yaml:"interval,omitempty"`
	Covers   string            `yaml:"covers,omitempty"`
	States   string            `yaml:"states,omitempty"`
	Sensors  map[string]string `yaml:"sensors,omitempty"`
	Model    *CPUModel         `yaml:"model,omitempty"`
}

// CPUModel is the cpu-time driver's power model of the host.
type CPUModel struct {
	IdleWatts    float64 `yaml:"idle_watts"`     // host with every VM idle
	WattsPerCore float64 `yaml:"watts_per_core"` // added per core a VM keeps busy
}

// ErrMeterConfig is an invalid meter section; errors wrap it in a MeterError.
var ErrMeterConfig = errors.New("meter config")

// MeterError names the field of the meter section that is wrong.
type MeterError struct{ Field, Msg string }

func (e *MeterError) Error() string {
	return fmt.Sprintf("cluster file: meter: %s: %s", e.Field, e.Msg)
}
func (e *MeterError) Unwrap() error { return ErrMeterConfig }

// IntervalOrDefault is the sampling interval, 1s if unset.
func (c Meter) IntervalOrDefault() time.Duration {
	if c.Interval <= 0 {
		return time.Second
	}
	return c.Interval
}

// CoversBoard is the worker id of "board:<id>", or "".
func (c Meter) CoversBoard() string {
	return strings.TrimPrefix(c.Covers, "board:")
}

// Validate checks the section against the cluster's workers and fills in
// defaults (covers). All problems are reported together.
func (c *Meter) Validate(workers []string) error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, &MeterError{Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	known := map[string]bool{}
	for _, w := range workers {
		known[w] = true
	}
	if c.Interval < 0 || c.Interval > time.Minute {
		bad("interval", "%v: use between 100ms and 1m (e.g. 1s)", c.Interval)
	} else if c.Interval > 0 && c.Interval < 100*time.Millisecond {
		bad("interval", "%v is too short to be measured reliably: use at least 100ms", c.Interval)
	}
	switch c.Covers {
	case "", "strip", "host":
	default:
		if id, ok := strings.CutPrefix(c.Covers, "board:"); !ok || id == "" {
			bad("covers", "%q: use strip, host or board:<worker id>", c.Covers)
		} else if !known[id] {
			bad("covers", "board %q is not a worker of this cluster", id)
		}
	}
	switch c.Driver {
	case DriverWattsUp:
		if c.Device == "" {
			bad("device", "missing: the WattsUp's serial port, e.g. /dev/ttyUSB0 (better: its /dev/serial/by-id/ link)")
		}
		if c.Interval%time.Second != 0 {
			bad("interval", "%v: the WattsUp logs in whole seconds", c.Interval)
		}
		if c.Covers == "" {
			c.Covers = "strip"
		}
		if c.Covers == "host" {
			bad("covers", "a WattsUp covers the strip or one board, not the host")
		}
	case DriverRAPL:
		if c.Covers == "" {
			c.Covers = "host"
		}
		if c.Covers != "host" {
			bad("covers", "%q: RAPL measures the host (its CPU packages), so covers: host", c.Covers)
		}
	case DriverHwmon:
		if len(c.Sensors) == 0 {
			bad("sensors", "missing: map each board to its sensor, e.g. {bbb0: ina226/bbb0} (see `mforch meter read --driver hwmon --list`)")
		}
		for w := range c.Sensors {
			if w != "strip" && !known[w] {
				bad("sensors", "%q is not a worker of this cluster (or use the key strip for a meter on the whole strip)", w)
			}
		}
		if c.Covers != "" {
			bad("covers", "leave it out for hwmon: each key of sensors says which board (or strip) a sensor covers")
		}
	case DriverCPUTime:
		if c.Model == nil {
			bad("model", "missing: give idle_watts and watts_per_core (measure them once with RAPL or a WattsUp: `mforch meter calibrate`)")
		} else {
			if c.Model.IdleWatts < 0 {
				bad("model.idle_watts", "%v is negative", c.Model.IdleWatts)
			}
			if c.Model.WattsPerCore <= 0 {
				bad("model.watts_per_core", "%v: must be above 0 (a busy core draws power)", c.Model.WattsPerCore)
			}
		}
		if c.Covers == "" {
			c.Covers = "host"
		}
		if c.Covers != "host" {
			bad("covers", "%q: the cpu-time model covers the host running the QEMU workers: covers: host", c.Covers)
		}
	case "":
		bad("driver", "missing: one of wattsup, rapl, hwmon, cpu-time")
	default:
		bad("driver", "%q: use one of wattsup, rapl, hwmon, cpu-time", c.Driver)
	}
	return errors.Join(errs...)
}
