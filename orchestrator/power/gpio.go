package power

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/warthog618/go-gpiocdev"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/clock"
)

// GPIO timings. See docs/power.md for where they come from.
const (
	// DefaultPulse is how long PowerOn presses PWR_BUT: 0.5 s, as the
	// original MicroFaaS orchestrator did.
	DefaultPulse = 500 * time.Millisecond
	// DefaultForcedOffHold is how long PowerOff presses PWR_BUT. The
	// TPS65217 PMIC on the BeagleBone Black turns its rails off when PB_IN
	// is held low for more than 8 s (its datasheet, as quoted on TI's E2E
	// forum; BeagleBoard users report 8-10 s). 10 s clears that threshold
	// with margin; exactly 8 s would sit on it.
	DefaultForcedOffHold = 10 * time.Second
	// DefaultReleaseGap is the least time the button stays released between
	// two presses on the same line. Without it a power-on queued behind a
	// forced-off hold would start microseconds after the hold ends, and the
	// PMIC would see one long press instead of two. 500 ms (one pulse) is an
	// assumption: the TPS65217's push-button debounce is far shorter.
	DefaultReleaseGap = 500 * time.Millisecond
	// DefaultConsumer is the label the kernel shows for a line while it is
	// pressed (gpioinfo's "consumer" column).
	DefaultConsumer = "mforch"
)

// GPIOConfig says how to press a BeagleBone's power button. The zero value
// is the original system's wiring: each worker's PWR_BUT (P9_9) straight to
// an orchestrator GPIO, pressed by driving the line low.
type GPIOConfig struct {
	// Pulse is how long PowerOn holds the button pressed (default 500 ms).
	Pulse time.Duration
	// ForcedOffHold is how long PowerOff holds the button pressed to force a
	// hung board off (default 10 s, above the PMIC's 8 s threshold).
	ForcedOffHold time.Duration
	// ReleaseGap is the least time the button stays released after a press
	// before the next press on the same line starts (default 500 ms).
	ReleaseGap time.Duration
	// ActiveHigh presses the button by driving the line high instead of low,
	// for wiring that inverts (e.g. a transistor that pulls PWR_BUT to ground
	// when the GPIO is high). False for a direct wire: PWR_BUT is active low.
	ActiveHigh bool
	// Consumer labels the line while it is requested (default "mforch").
	Consumer string
	// Lines requests the lines (default: the kernel's GPIO character
	// devices through go-gpiocdev). Tests pass a fake.
	Lines Lines
	// Clock times the presses (default: the system clock).
	Clock clock.Clock
	Log   *slog.Logger
}

// Lines requests GPIO lines as outputs.
type Lines interface {
	// Request takes line for workerID and drives it to the logical value 1
	// ("pressed") at once; activeLow makes 1 a low level. The error says
	// what to do when the chip or line is missing or busy.
	Request(workerID string, line WorkerLine, consumer string, activeLow bool) (Line, error)
}

// Line is a requested output line.
type Line interface {
	// SetValue drives the logical value (1 pressed, 0 released).
	SetValue(v int) error
	// Close gives the line back to the kernel.
	Close() error
}

// GPIO is the power controller for BeagleBone workers: it presses a board's
// PWR_BUT by driving the orchestrator GPIO line wired to it. A line is
// requested only for the length of one press and released after, so other
// tools (gpioinfo, gpioget) can use the chip between presses. Presses on
// different lines run in parallel; a press on a line that is already being
// pressed waits for the first to finish and then for the release gap.
type GPIO struct {
	cfg   GPIOConfig
	mu    sync.Mutex
	lines map[string]*lineLock // by "chip/offset"
}

// lineLock serialises presses on one line. Two presses overlapping on the
// same button would merge into one long press, which the PMIC reads as a
// different command (a short press powers on, a long one forces off).
type lineLock struct {
	sem chan struct{} // capacity 1: holding it means pressing the line
	// What holds it, for the error of a press that gives up waiting.
	// Guarded by GPIO.mu.
	what, worker string
	since        time.Time
	// released is when the last press on the line ended. Guarded by the
	// semaphore.
	released time.Time
}

// NewGPIO returns the GPIO controller with cfg's defaults filled in. It does
// not touch the hardware; Verify does.
func NewGPIO(cfg GPIOConfig) (*GPIO, error) {
	if cfg.Pulse == 0 {
		cfg.Pulse = DefaultPulse
	}
	if cfg.ForcedOffHold == 0 {
		cfg.ForcedOffHold = DefaultForcedOffHold
	}
	if cfg.ReleaseGap == 0 {
		cfg.ReleaseGap = DefaultReleaseGap
	}
	if cfg.Consumer == "" {
		cfg.Consumer = DefaultConsumer
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Lines == nil {
		cfg.Lines = cdevLines{}
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Pulse < 0 || cfg.ForcedOffHold < 0 || cfg.ReleaseGap < 0 {
		return nil, fmt.Errorf("gpio power: negative pulse (%s), forced-off hold (%s) or release gap (%s)",
			cfg.Pulse, cfg.ForcedOffHold, cfg.ReleaseGap)
	}
	if cfg.ForcedOffHold <= cfg.Pulse {
		// The PMIC tells the two apart only by length.
		return nil, fmt.Errorf("gpio power: forced-off hold %s must be longer than the power-on pulse %s", cfg.ForcedOffHold, cfg.Pulse)
	}
	// The kernel keeps 32 bytes of consumer label, NUL included.
	if len(cfg.Consumer) > 31 {
		return nil, fmt.Errorf("gpio power: consumer label %q is longer than the kernel's 31 characters", cfg.Consumer)
	}
	return &GPIO{cfg: cfg, lines: map[string]*lineLock{}}, nil
}

// Config is the controller's configuration with defaults applied.
func (g *GPIO) Config() GPIOConfig { return g.cfg }

// PowerOn presses the worker's power button for the configured pulse and
// returns once it is released.
func (g *GPIO) PowerOn(ctx context.Context, w cluster.Worker) error {
	return g.press(ctx, w, g.cfg.Pulse, "power-on pulse")
}

// PowerOff holds the worker's power button for the forced-off hold, which
// makes the PMIC cut the board's power. It returns once the button is
// released. On a board that is already off, the press first powers it on and
// the hold then forces it off again.
func (g *GPIO) PowerOff(ctx context.Context, w cluster.Worker) error {
	return g.press(ctx, w, g.cfg.ForcedOffHold, "forced power-off hold")
}

// WorkerLine is the GPIO line wired to a worker's PWR_BUT.
type WorkerLine struct {
	cluster.Line
	Pin string // BeagleBone header name, when the cluster file gave one
}

func (l WorkerLine) String() string {
	if l.Pin != "" {
		return fmt.Sprintf("%s line %d (pin %s)", l.Chip, l.Offset, l.Pin)
	}
	return fmt.Sprintf("%s line %d", l.Chip, l.Offset)
}

// ResolveLine returns the line of a bbb worker: its header pin mapped with
// cluster.LookupPin, or its chip and line as given.
func ResolveLine(w cluster.Worker) (WorkerLine, error) {
	if w.Kind != cluster.KindBBB {
		return WorkerLine{}, fmt.Errorf("worker %s is kind %q: the GPIO power controller powers %q workers", w.ID, w.Kind, cluster.KindBBB)
	}
	p := w.Power
	hasChipLine := p.Chip != "" || p.Line != nil
	switch {
	case p.Pin != "" && hasChipLine:
		return WorkerLine{}, fmt.Errorf("worker %s: power has both pin %s and chip/line: give one of them in the cluster file", w.ID, p.Pin)
	case p.Pin != "":
		l, err := cluster.LookupPin(p.Pin)
		if err != nil {
			return WorkerLine{}, fmt.Errorf("worker %s: power.pin: %w", w.ID, err)
		}
		return WorkerLine{Line: l, Pin: p.Pin}, nil
	case p.Chip != "" && p.Line != nil:
		if *p.Line < 0 {
			return WorkerLine{}, fmt.Errorf("worker %s: power.line %d: a line offset is 0 or more", w.ID, *p.Line)
		}
		return WorkerLine{Line: cluster.Line{Chip: p.Chip, Offset: *p.Line}}, nil
	}
	return WorkerLine{}, fmt.Errorf("worker %s: no power line: set power.pin (e.g. P9_12) or power.chip and power.line in the cluster file", w.ID)
}

// Verify checks, without pressing anything, that every bbb worker's line
// exists and is free: the chip opens, has the line, and no other program
// holds it. mforch calls it at start so a wrong host or cluster file fails
// at once instead of at the first power-on.
func (g *GPIO) Verify(workers []cluster.Worker) error {
	chips := map[string]*gpiocdev.Chip{}
	defer func() {
		for _, c := range chips {
			c.Close()
		}
	}()
	var errs []error
	for _, w := range workers {
		if w.Kind != cluster.KindBBB {
			continue
		}
		line, err := ResolveLine(w)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		chip, ok := chips[line.Chip]
		if !ok {
			if chip, err = openChip(w.ID, line); err != nil {
				errs = append(errs, err)
				continue
			}
			chips[line.Chip] = chip
		}
		if err := checkOffset(w.ID, line, chip); err != nil {
			errs = append(errs, err)
			continue
		}
		info, err := chip.LineInfo(line.Offset)
		if err != nil {
			errs = append(errs, fmt.Errorf("worker %s: PWR_BUT %s: read line info: %w", w.ID, line, err))
			continue
		}
		if info.Used {
			errs = append(errs, fmt.Errorf("worker %s: PWR_BUT %s is in use by %q: free it (gpioinfo %s shows who holds it)",
				w.ID, line, info.Consumer, line.Chip))
		}
	}
	return errors.Join(errs...)
}

// press drives the worker's line to "pressed" for hold, then to "released",
// then gives the line back.
func (g *GPIO) press(ctx context.Context, w cluster.Worker, hold time.Duration, what string) error {
	line, err := ResolveLine(w)
	if err != nil {
		return err
	}
	unlock, err := g.lock(ctx, w.ID, line, what)
	if err != nil {
		return err
	}
	pressedOnce := false
	defer func() { unlock(pressedOnce) }()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("worker %s: %s on %s not started: %w", w.ID, what, line, err)
	}
	// The request drives the line to "pressed" at once: there is no moment
	// where the line is an output at the wrong level.
	l, err := g.cfg.Lines.Request(w.ID, line, g.cfg.Consumer, !g.cfg.ActiveHigh)
	if err != nil {
		return err
	}
	clk := g.cfg.Clock
	pressed := clk.Now()
	pressedOnce = true
	var cut error
	if !clock.Sleep(clk, hold, ctx.Done()) {
		// Never leave a button pressed because a caller gave up: release
		// it now and report the press as cut short.
		cut = ctx.Err()
	}
	// Release before giving the line back rather than leave it to the free:
	// what a freed line does is up to the driver (omap-gpio in Linux 6.1
	// turns it into an input, so the PMIC's pull-up takes over; a driver
	// that keeps the output level would keep the button pressed).
	if err := l.SetValue(0); err != nil {
		l.Close()
		return fmt.Errorf("worker %s: release PWR_BUT on %s: %w (the button may still be pressed: check with gpioget %s %d)",
			w.ID, line, err, line.Chip, line.Offset)
	}
	held := clk.Now().Sub(pressed)
	if err := l.Close(); err != nil {
		return fmt.Errorf("worker %s: free %s after the %s: %w", w.ID, line, what, err)
	}
	if cut != nil {
		return fmt.Errorf("worker %s: %s on %s cut short after %s of %s: %w", w.ID, what, line, held.Round(time.Millisecond), hold, cut)
	}
	g.cfg.Log.Debug("PWR_BUT pressed", "worker", w.ID, "line", line.String(), "what", what, "held", held.Round(time.Millisecond))
	return nil
}

// lock waits until no other press runs on line and the release gap after
// the last one has passed, or ctx ends. The caller unlocks, saying whether
// it pressed the button.
func (g *GPIO) lock(ctx context.Context, workerID string, line WorkerLine, what string) (func(pressed bool), error) {
	key := fmt.Sprintf("%s/%d", line.Chip, line.Offset)
	g.mu.Lock()
	lk := g.lines[key]
	if lk == nil {
		lk = &lineLock{sem: make(chan struct{}, 1)}
		g.lines[key] = lk
	}
	g.mu.Unlock()
	select {
	case lk.sem <- struct{}{}:
	default:
		g.mu.Lock()
		other, otherWorker, since := lk.what, lk.worker, lk.since
		g.mu.Unlock()
		g.cfg.Log.Info("waiting for the press already running on the same line",
			"worker", workerID, "line", line.String(), "running", other, "for_worker", otherWorker)
		select {
		case lk.sem <- struct{}{}:
		case <-ctx.Done():
			running := "another press"
			if other != "" {
				running = fmt.Sprintf("the %s for worker %s (running for %s)", other, otherWorker, g.cfg.Clock.Now().Sub(since).Round(time.Millisecond))
			}
			return nil, fmt.Errorf("worker %s: %s on %s: gave up waiting for %s on the same line: %w",
				workerID, what, line, running, ctx.Err())
		}
	}
	g.mu.Lock()
	lk.what, lk.worker, lk.since = what, workerID, g.cfg.Clock.Now()
	g.mu.Unlock()
	unlock := func() {
		g.mu.Lock()
		lk.what, lk.worker = "", ""
		g.mu.Unlock()
		<-lk.sem
	}
	// Let the button rest after the previous press so the PMIC sees a
	// release between the two.
	if wait := g.cfg.ReleaseGap - g.cfg.Clock.Now().Sub(lk.released); !lk.released.IsZero() && wait > 0 {
		if !clock.Sleep(g.cfg.Clock, wait, ctx.Done()) {
			unlock()
			return nil, fmt.Errorf("worker %s: %s on %s: gave up waiting for the %s release gap after the previous press: %w",
				workerID, what, line, g.cfg.ReleaseGap, ctx.Err())
		}
	}
	return func(pressed bool) {
		if pressed {
			lk.released = g.cfg.Clock.Now()
		}
		unlock()
	}, nil
}

// cdevLines requests lines from the kernel's GPIO character devices.
type cdevLines struct{}

// cdevLine is a requested line and the chip it came from, closed together.
type cdevLine struct {
	*gpiocdev.Line
	chip *gpiocdev.Chip
}

func (l cdevLine) Close() error {
	err := l.Line.Close()
	l.chip.Close()
	return err
}

func (cdevLines) Request(workerID string, line WorkerLine, consumer string, activeLow bool) (Line, error) {
	chip, err := openChip(workerID, line)
	if err != nil {
		return nil, err
	}
	if err := checkOffset(workerID, line, chip); err != nil {
		chip.Close()
		return nil, err
	}
	opts := []gpiocdev.LineReqOption{gpiocdev.WithConsumer(consumer), gpiocdev.AsOutput(1)}
	if activeLow {
		// Values are logical: 1 is "pressed", which the kernel turns into
		// a low level. gpioinfo then shows the line as active-low.
		opts = append(opts, gpiocdev.AsActiveLow)
	}
	l, err := chip.RequestLine(line.Offset, opts...)
	if err != nil {
		err = requestError(workerID, line, chip, err)
		chip.Close()
		return nil, err
	}
	return cdevLine{l, chip}, nil
}

// openChip opens line's chip, explaining the usual reasons it cannot be.
func openChip(workerID string, line WorkerLine) (*gpiocdev.Chip, error) {
	chip, err := gpiocdev.NewChip(line.Chip)
	if err == nil {
		return chip, nil
	}
	where := fmt.Sprintf("worker %s: PWR_BUT %s", workerID, line)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s: GPIO chip %s does not exist: is this the orchestrator BeagleBone? list chips with gpiodetect: %w",
			where, line.Chip, err)
	case errors.Is(err, gpiocdev.ErrNotCharacterDevice):
		return nil, fmt.Errorf("%s: %s is not a GPIO character device (is /sys mounted? list chips with gpiodetect): %w",
			where, line.Chip, err)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("%s: no permission to open /dev/%s: run mforch as root or give its user access to the GPIO chips: %w",
			where, line.Chip, err)
	}
	return nil, fmt.Errorf("%s: open GPIO chip %s: %w", where, line.Chip, err)
}

func checkOffset(workerID string, line WorkerLine, chip *gpiocdev.Chip) error {
	if line.Offset < chip.Lines() {
		return nil
	}
	hint := "check power.line in the cluster file"
	if line.Pin != "" {
		hint = "is this the orchestrator BeagleBone?"
	}
	return fmt.Errorf("worker %s: PWR_BUT %s: %s (%q) has %d lines, no line %d: %s (gpioinfo %s lists them): %w",
		workerID, line, line.Chip, chip.Label, chip.Lines(), line.Offset, hint, line.Chip, gpiocdev.ErrInvalidOffset)
}

func requestError(workerID string, line WorkerLine, chip *gpiocdev.Chip, err error) error {
	where := fmt.Sprintf("worker %s: PWR_BUT %s", workerID, line)
	if errors.Is(err, syscall.EBUSY) {
		holder := "another program or a kernel driver"
		if info, ierr := chip.LineInfo(line.Offset); ierr == nil && info.Consumer != "" {
			holder = fmt.Sprintf("%q", info.Consumer)
		}
		return fmt.Errorf("%s is in use by %s: free the line (gpioinfo %s shows who holds it): %w", where, holder, line.Chip, err)
	}
	return fmt.Errorf("%s: request the line as an output: %w", where, err)
}
