package rig

import (
	"bufio"
	"context"
	"fmt"
	"io"

	"github.com/microfaas/microfaas/orchestrator/energy/sysfs"
)

// ListSensors prints the host's RAPL zones and hwmon power sensors under
// root (default /sys): what a meter section can name.
func ListSensors(root string, w io.Writer) error {
	if root == "" {
		root = "/sys"
	}
	zones, err := sysfs.RAPLZones(root)
	if err != nil {
		fmt.Fprintf(w, "RAPL: %v\n", err)
	}
	for _, z := range zones {
		fmt.Fprintf(w, "RAPL  %s  %s  (wraps at %d uJ)\n", z.Dir, z.Name, z.MaxRange)
	}
	sensors, _ := sysfs.HwmonSensors(root)
	if len(sensors) == 0 {
		fmt.Fprintf(w, "hwmon: no power sensors under %s/class/hwmon\n", root)
	}
	for _, s := range sensors {
		fmt.Fprintf(w, "hwmon %s  chip %s  label %q\n", s.Path, s.Chip, s.Label)
	}
	return nil
}

// Operator is calibration's PowerControl (energy.Calibration.Control)
// played by a person at the strip: each step is a prompt answered with
// Enter.
type Operator struct {
	in  *bufio.Reader
	out io.Writer
}

// NewOperator prompts on out and reads the answers from in.
func NewOperator(in io.Reader, out io.Writer) *Operator {
	return &Operator{in: bufio.NewReader(in), out: out}
}

func (o *Operator) ask(ctx context.Context, msg string) error {
	fmt.Fprintf(o.out, "%s, then press Enter: ", msg)
	line := make(chan error, 1)
	go func() { _, err := o.in.ReadString('\n'); line <- err }()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-line:
		if err != nil {
			return fmt.Errorf("calibration needs an answer on stdin: %w", err)
		}
		return nil
	}
}

func (o *Operator) AllOff(ctx context.Context) error {
	return o.ask(ctx, "Power every board off (leave switch and orchestrator on)")
}
func (o *Operator) PowerOn(ctx context.Context) error {
	return o.ask(ctx, "Press the power button of ONE board now")
}
func (o *Operator) WaitBooted(ctx context.Context) error {
	return o.ask(ctx, "Wait until it has booted (it answers ping / its console shows the worker started)")
}
func (o *Operator) StartBusy(ctx context.Context) error {
	return o.ask(ctx, "Make it busy (e.g. on its console: while :; do :; done &)")
}
func (o *Operator) StopBusy(ctx context.Context) error {
	return o.ask(ctx, "Stop the busy loop (kill %1)")
}
func (o *Operator) PowerOff(ctx context.Context) error {
	return o.ask(ctx, "Start its shutdown (poweroff on its console, or a short press of its power button)")
}
func (o *Operator) WaitOff(ctx context.Context) error {
	return o.ask(ctx, "Wait until it is off (power LED dark)")
}
