// Package meters opens the meter a Config names: the one place that knows
// every driver, so the orchestrator and mforch share it.
package meters

import (
	"fmt"
	"log/slog"

	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/cpumodel"
	"github.com/microfaas/microfaas/orchestrator/energy/sysfs"
	"github.com/microfaas/microfaas/orchestrator/energy/wattsup"
)

// Env is what drivers need from their surroundings.
type Env struct {
	Workers []string              // the cluster's worker ids
	PIDs    func() map[string]int // cpu-time: running QEMU processes by worker
	Log     *slog.Logger
	Clock   clock.Clock // sample timestamps (nil: the system clock)
}

// Open returns the meter cfg describes; cfg must have passed Validate.
func Open(cfg energy.Config, env Env) (energy.Meter, error) {
	iv := cfg.IntervalOrDefault()
	switch cfg.Driver {
	case energy.DriverWattsUp:
		worker := ""
		if cfg.Covers != "strip" && cfg.Covers != "" {
			worker = cfg.CoversBoard()
		}
		return &wattsup.Meter{Device: cfg.Device, Interval: iv, Worker: worker, Clock: env.Clock, Log: env.Log}, nil
	case energy.DriverRAPL:
		return &sysfs.RAPL{Root: cfg.Path, Interval: iv, Clock: env.Clock}, nil
	case energy.DriverHwmon:
		sensors := map[string]string{}
		for w, spec := range cfg.Sensors {
			if w == "strip" {
				w = ""
			}
			sensors[w] = spec
		}
		return &sysfs.Hwmon{Root: cfg.Path, Sensors: sensors, Interval: iv, Clock: env.Clock}, nil
	case energy.DriverCPUTime:
		if cfg.Model == nil {
			return nil, fmt.Errorf("%w: cpu-time needs model", energy.ErrConfig)
		}
		pids := env.PIDs
		if pids == nil {
			return nil, fmt.Errorf("%w: cpu-time needs the QEMU workers' process ids (only mforch serve/demo can model its own VMs)", energy.ErrConfig)
		}
		return &cpumodel.Meter{Proc: cfg.Path, Workers: env.Workers, PIDs: pids, IdleWatts: cfg.Model.IdleWatts,
			WattsPerCore: cfg.Model.WattsPerCore, Interval: iv, Clock: env.Clock}, nil
	}
	return nil, fmt.Errorf("%w: driver %q", energy.ErrConfig, cfg.Driver)
}
