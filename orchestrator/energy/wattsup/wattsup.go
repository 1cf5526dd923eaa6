// Package wattsup reads a WattsUp Pro / .net power meter over its USB
// serial port: it resets the meter, starts external logging at an interval
// and turns every "#d" data packet into a power sample, resynchronising
// after noise and reopening the port when the meter goes away.
package wattsup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/energy"
)

// Source is the sample source of this driver.
const Source = "measured:wattsup"

// ErrStalled is a meter that sent no data packet for too long.
var ErrStalled = errors.New("wattsup: no data from the meter")

// Port is an open serial port.
type Port interface {
	io.ReadWriteCloser
	SetReadDeadline(time.Time) error
}

// Meter is a WattsUp on a serial port.
type Meter struct {
	Device   string        // e.g. /dev/ttyUSB0 or /dev/serial/by-id/usb-FTDI_...
	Interval time.Duration // logging interval, whole seconds (default 1s)
	Worker   string        // board it covers; "" for the whole strip
	Clock    clock.Clock   // sample timestamps (nil: the system clock)
	Log      *slog.Logger
	// Open opens the port (default OpenSerial).
	Open func(path string) (Port, error)
	// Retry is how long to wait before reopening a lost port (default 1s).
	Retry time.Duration
	// Stall is how long without a data packet before the port is reopened
	// (default 3 intervals + 2s).
	Stall time.Duration
	// OnReading, if set, sees every reading with its volts, amps, etc.
	OnReading func(time.Time, Reading)

	// Dropped counts packets lost to noise (read after Run returns).
	Dropped int
}

// Source implements energy.Meter.
func (m *Meter) Source() string { return Source }

func (m *Meter) interval() time.Duration {
	if m.Interval <= 0 {
		return time.Second
	}
	return m.Interval
}

// Run reads the meter until ctx is cancelled, reopening the port whenever
// it fails.
func (m *Meter) Run(ctx context.Context, emit func(energy.Sample)) error {
	if s := m.interval(); s%time.Second != 0 {
		return fmt.Errorf("wattsup: interval %v: the meter logs in whole seconds", s)
	}
	log := m.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	retry := m.Retry
	if retry <= 0 {
		retry = time.Second
	}
	for {
		err := m.session(ctx, emit)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("wattsup: meter lost, reopening", "device", m.Device, "err", err, "retry", retry)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retry):
		}
	}
}

// session opens the port, starts logging and reads until the port fails.
func (m *Meter) session(ctx context.Context, emit func(energy.Sample)) error {
	open := m.Open
	if open == nil {
		open = func(p string) (Port, error) { return OpenSerial(p) }
	}
	port, err := open(m.Device)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			port.Close() // interrupts Read
		case <-done:
			port.Close()
		}
	}()
	secs := int(m.interval() / time.Second)
	for _, c := range []string{CmdReset, CmdHeaderRead, CmdLogExternal(secs)} {
		if _, err := io.WriteString(port, c); err != nil {
			return fmt.Errorf("wattsup: write %s: %w", c, err)
		}
	}
	stall := m.Stall
	if stall <= 0 {
		stall = 3*m.interval() + 2*time.Second
	}
	fields := DefaultFields
	var sc Scanner
	defer func() { m.Dropped += sc.Dropped }()
	buf := make([]byte, 256)
	for {
		port.SetReadDeadline(time.Now().Add(stall))
		n, err := port.Read(buf)
		for _, p := range sc.Feed(buf[:n]) {
			switch p.Cmd {
			case 'h':
				fields = append([]string(nil), p.Args...)
			case 'd':
				r, err := ParseData(p, fields)
				if err != nil {
					sc.Dropped++
					continue
				}
				at := clock.OrReal(m.Clock).Now()
				if m.OnReading != nil {
					m.OnReading(at, r)
				}
				emit(energy.Sample{At: at, Watts: r.Watts, Worker: m.Worker, Source: Source})
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("%w for %v", ErrStalled, stall)
			}
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.EIO) {
				return fmt.Errorf("wattsup: %s hung up: %w", m.Device, err)
			}
			return err
		}
	}
}
