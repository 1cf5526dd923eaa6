// Package cpumodel estimates the power of QEMU workers on a host with no
// meter: each VM's CPU time (utime+stime of its QEMU process in
// /proc/PID/stat) times a per-core power, plus the host's idle power. It is a
// model, not a measurement: its source is "model:cpu-time" and every output
// says "model".
package cpumodel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/energy"
)

// Source of this model's samples.
const Source = "model:cpu-time"

// ErrBadStat is a /proc/PID/stat this package cannot read.
var ErrBadStat = errors.New("cpumodel: unreadable /proc/PID/stat")

// CPUTicks is a process's utime+stime in clock ticks, from procRoot/PID/stat.
func CPUTicks(procRoot string, pid int) (int64, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces or
	// parentheses itself: the fields that follow start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: pid %d: no command name", ErrBadStat, pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%w: pid %d: %d fields", ErrBadStat, pid, len(f)+2)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%w: pid %d: utime %q stime %q", ErrBadStat, pid, f[11], f[12])
	}
	return u + st, nil
}

// Meter is the CPU-time model as an energy.Meter. Each sample interval it
// emits, for every worker, WattsPerCore times the cores its QEMU process kept
// busy, and for the host (Worker "") IdleWatts plus the workers' sum.
type Meter struct {
	Proc         string                // /proc (default)
	Workers      []string              // every worker, so idle ones read 0 W
	PIDs         func() map[string]int // running QEMU processes by worker
	IdleWatts    float64               // host power with no VM busy
	WattsPerCore float64               // added per fully busy core
	TicksPerSec  int                   // USER_HZ, 100 on Linux
	Interval     time.Duration         // default 1s
	Clock        clock.Clock           // sample timestamps (nil: the system clock)
	Tick         <-chan time.Time      // tests
}

// Source implements energy.Meter.
func (m *Meter) Source() string { return Source }

// Run samples until ctx is cancelled.
func (m *Meter) Run(ctx context.Context, emit func(energy.Sample)) error {
	proc := m.Proc
	if proc == "" {
		proc = "/proc"
	}
	hz := m.TicksPerSec
	if hz <= 0 {
		hz = 100
	}
	var tick <-chan time.Time = m.Tick
	if tick == nil {
		d := m.Interval
		if d <= 0 {
			d = time.Second
		}
		t := time.NewTicker(d)
		defer t.Stop()
		tick = t.C
	}
	type seen struct {
		pid   int
		ticks int64
	}
	prev := map[string]seen{}
	workers := append([]string(nil), m.Workers...)
	sort.Strings(workers)
	read := func() map[string]seen {
		cur := map[string]seen{}
		for w, pid := range m.PIDs() {
			t, err := CPUTicks(proc, pid)
			if err != nil {
				continue // exited between listing and reading: it used nothing more we can see
			}
			cur[w] = seen{pid, t}
		}
		return cur
	}
	prev = read()
	prevAt := clock.OrReal(m.Clock).Now()
	// Start marks for every series, so each one's first interval counts.
	for _, w := range workers {
		emit(energy.Sample{At: prevAt, Worker: w, Source: Source})
	}
	emit(energy.Sample{At: prevAt, Watts: m.IdleWatts, Source: Source})
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
		}
		cur := read()
		at := clock.OrReal(m.Clock).Now()
		dt := at.Sub(prevAt).Seconds()
		if dt <= 0 {
			continue
		}
		host := m.IdleWatts
		for _, w := range workers {
			var used int64
			if c, ok := cur[w]; ok {
				used = c.ticks
				if p, ok := prev[w]; ok && p.pid == c.pid {
					used -= p.ticks // same process: what it used since; a new one: all it used
				}
			}
			watts := m.WattsPerCore * float64(used) / float64(hz) / dt
			host += watts
			emit(energy.Sample{At: at, Watts: watts, Worker: w, Source: Source})
		}
		emit(energy.Sample{At: at, Watts: host, Source: Source})
		prev, prevAt = cur, at
	}
}
