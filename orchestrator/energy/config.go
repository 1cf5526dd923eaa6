package energy

import "github.com/microfaas/microfaas/cluster"

// The meter section is part of the cluster file, which builder reads too,
// so its type lives in package cluster; these names keep energy's API.
type (
	// Config is the cluster file's "meter:" section (cluster.Meter).
	Config = cluster.Meter
	// CPUModel is the cpu-time driver's power model of the host.
	CPUModel = cluster.CPUModel
	// ConfigError names the field of the meter section that is wrong.
	ConfigError = cluster.MeterError
)

// ErrConfig is an invalid meter section; errors wrap it in a ConfigError.
var ErrConfig = cluster.ErrMeterConfig

// Drivers a Config can name.
const (
	DriverWattsUp = cluster.DriverWattsUp
	DriverRAPL    = cluster.DriverRAPL
	DriverHwmon   = cluster.DriverHwmon
	DriverCPUTime = cluster.DriverCPUTime
)
