package power_test

// The guest half of TestGPIOSim. This test binary is PID 1 of a QEMU guest
// running the x86 worker kernel: it creates gpio-sim chips through configfs,
// drives them with the real GPIO power controller, watches the lines through
// gpio-sim's sysfs values and the GPIO character device's line-info events,
// and prints what it saw on the console for the host half to check.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/warthog618/go-gpiocdev"
	"golang.org/x/sys/unix"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/power"
	mfruntime "github.com/microfaas/microfaas/runtime"
)

// What guest and host agree on.
const (
	// guestEnv is set on the guest's kernel command line; the kernel hands
	// it to PID 1 as an environment variable.
	guestEnv     = "mf_gpiosim"
	resultPrefix = "GPIOSIM-RESULT "
	fatalPrefix  = "GPIOSIM-FATAL "
	doneMarker   = "GPIOSIM-DONE"

	// Four banks of 32 lines, like the AM335x's four GPIO modules. With no
	// other GPIO chip in the microvm they come up as gpiochip0..3, the
	// names the BeagleBone's kernel gives its banks.
	simBanks = 4
	simLines = 32

	// Scenario timings. The power-on pulse is the real default; the forced-
	// off hold stands in for the real 10 s.
	simHold      = 2 * time.Second
	simPinPulse  = 50 * time.Millisecond
	simWaitHold  = time.Second
	simHighPulse = 300 * time.Millisecond
)

// simReport is one scenario's observations, printed as one JSON line.
type simReport struct {
	Scenario string    `json:"scenario"`
	Chips    []simChip `json:"chips,omitempty"`
	// Clocksource is the guest kernel's current and available clocksources.
	Clocksource string               `json:"clocksource,omitempty"`
	Calls       []simCall            `json:"calls,omitempty"`
	Lines       map[string]*simTrace `json:"lines,omitempty"` // by "gpiochipN/offset"
	Info        []simInfo            `json:"info,omitempty"`
	// StillRequested lists lines some consumer holds when the scenario ends.
	StillRequested []string `json:"still_requested,omitempty"`
	mu             sync.Mutex
}

type simChip struct {
	Bank  int    `json:"bank"`
	Name  string `json:"name"` // chip_name from configfs
	Label string `json:"label"`
	Lines int    `json:"lines"`
}

// simCall is one controller call: which, when (CLOCK_MONOTONIC ms), and its error.
type simCall struct {
	Worker   string  `json:"worker"`
	Op       string  `json:"op"`
	StartMS  float64 `json:"start_ms"`
	EndMS    float64 `json:"end_ms"`
	Err      string  `json:"err,omitempty"`
	Deadline bool    `json:"deadline,omitempty"` // errors.Is(err, context.DeadlineExceeded)
}

// simTrace is a line's level as gpio-sim reports it, polled.
type simTrace struct {
	Name    string      `json:"name"`
	Initial int         `json:"initial"`
	Changes []simChange `json:"changes"`
	Final   int         `json:"final"`
	Polls   int         `json:"polls"`
}

type simChange struct {
	MS float64 `json:"ms"`
	V  int     `json:"v"`
}

// simInfo is a line-info change event from the character device.
type simInfo struct {
	MS        float64 `json:"ms"`
	Chip      string  `json:"chip"`
	Offset    int     `json:"offset"`
	Name      string  `json:"name"`
	Event     string  `json:"event"` // requested, released, reconfigured
	Consumer  string  `json:"consumer,omitempty"`
	ActiveLow bool    `json:"active_low,omitempty"`
	Output    bool    `json:"output,omitempty"`
}

func (r *simReport) call(worker, op string, fn func() error) error {
	start := monoMS()
	err := fn()
	c := simCall{Worker: worker, Op: op, StartMS: start, EndMS: monoMS(), Deadline: errors.Is(err, context.DeadlineExceeded)}
	if err != nil {
		c.Err = err.Error()
	}
	r.mu.Lock()
	r.Calls = append(r.Calls, c)
	r.mu.Unlock()
	return err
}

// monoMS is CLOCK_MONOTONIC in milliseconds: the clock the kernel stamps
// line-info events with, so polled levels and events share one time axis.
func monoMS() float64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return float64(ts.Sec)*1e3 + float64(ts.Nsec)/1e6
}

// lineKey names a line in reports.
func lineKey(chip string, offset int) string { return fmt.Sprintf("%s/%d", chip, offset) }

// simLineName is the name the guest gives each simulated line: the AM335x
// GPIO it stands for, GPIO<bank>_<bit>, as the BeagleBone manuals write it.
func simLineName(bank, offset int) string { return fmt.Sprintf("GPIO%d_%d", bank, offset) }

// parseSimLineName is the inverse of simLineName.
func parseSimLineName(name string) (bank, offset int, err error) {
	b, o, ok := strings.Cut(strings.TrimPrefix(name, "GPIO"), "_")
	if !ok || !strings.HasPrefix(name, "GPIO") {
		return 0, 0, fmt.Errorf("%q is not GPIO<bank>_<bit>", name)
	}
	if bank, err = strconv.Atoi(b); err != nil {
		return 0, 0, err
	}
	offset, err = strconv.Atoi(o)
	return bank, offset, err
}

// syncWriter serialises console writes so log lines and reports never
// interleave.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// guestMain runs in the guest as PID 1 and never returns.
func guestMain() {
	out := &syncWriter{w: os.Stdout}
	if err := runGuest(out); err != nil {
		fmt.Fprintf(out, "%s%s\n", fatalPrefix, strings.ReplaceAll(err.Error(), "\n", " | "))
	}
	fmt.Fprintln(out, doneMarker)
	// A reset: with reboot=t and -no-reboot, QEMU exits.
	err := mfruntime.PowerOff("reboot")
	fmt.Fprintf(out, "%spower off: %v\n", fatalPrefix, err)
	select {}
}

func runGuest(out io.Writer) error {
	if err := mfruntime.MountAll(); err != nil {
		return fmt.Errorf("mounts: %w", err)
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sim, err := newGPIOSim("mfsim")
	if err != nil {
		return err
	}
	emit := func(r *simReport) error {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s%s\n", resultPrefix, b)
		return err
	}
	if err := emit(&simReport{Scenario: "setup", Chips: sim.chips, Clocksource: clocksource()}); err != nil {
		return err
	}
	for _, c := range sim.chips {
		if c.Name != fmt.Sprintf("gpiochip%d", c.Bank) {
			// The pin-name scenarios rely on bank N being gpiochipN, as on
			// the BeagleBone: stop here, the host reports the setup.
			return fmt.Errorf("gpio-sim bank %d came up as %s, not gpiochip%d", c.Bank, c.Name, c.Bank)
		}
	}
	watch, err := newInfoWatch(sim)
	if err != nil {
		return err
	}
	defer watch.close()
	for _, sc := range guestScenarios(log) {
		r, err := runScenario(sim, watch, sc)
		if err != nil {
			return fmt.Errorf("scenario %s: %w", sc.name, err)
		}
		if err := emit(r); err != nil {
			return err
		}
	}
	return nil
}

// clocksource says which clock the guest's timestamps come from.
func clocksource() string {
	dir := "/sys/devices/system/clocksource/clocksource0/"
	cur, err := os.ReadFile(dir + "current_clocksource")
	if err != nil {
		return err.Error()
	}
	avail, _ := os.ReadFile(dir + "available_clocksource")
	return fmt.Sprintf("%s (available: %s)", strings.TrimSpace(string(cur)), strings.TrimSpace(string(avail)))
}

// guestScenario is one experiment: the lines to poll and what to do.
type guestScenario struct {
	name string
	// poll lists lines by simLineName; pullDown lines idle low instead of high.
	poll     []string
	pullDown []string
	run      func(r *simReport) error
}

func bbb(id, pin string) cluster.Worker {
	return cluster.Worker{ID: id, Kind: cluster.KindBBB, Power: cluster.GPIOPower{Pin: pin}}
}

func bbbChipLine(id, chip string, line int) cluster.Worker {
	return cluster.Worker{ID: id, Kind: cluster.KindBBB, Power: cluster.GPIOPower{Chip: chip, Line: &line}}
}

func guestScenarios(log *slog.Logger) []guestScenario {
	ctrl := func(cfg power.GPIOConfig) (*power.GPIO, error) {
		cfg.Log = log
		return power.NewGPIO(cfg)
	}
	return []guestScenario{
		{
			// The default configuration: the original 500 ms press on P9_12.
			name: "power-on", poll: []string{originalPins["P9_12"]},
			run: func(r *simReport) error {
				g, err := ctrl(power.GPIOConfig{})
				if err != nil {
					return err
				}
				r.call("w0", "on", func() error { return g.PowerOn(context.Background(), bbb("w0", "P9_12")) })
				return nil
			},
		},
		{
			name: "power-off", poll: []string{originalPins["P9_15"]},
			run: func(r *simReport) error {
				g, err := ctrl(power.GPIOConfig{ForcedOffHold: simHold})
				if err != nil {
					return err
				}
				r.call("w1", "off", func() error { return g.PowerOff(context.Background(), bbb("w1", "P9_15")) })
				return nil
			},
		},
		{
			// Every worker of the original cluster, one after the other.
			name: "pins", poll: originalPinLines(),
			run: func(r *simReport) error {
				g, err := ctrl(power.GPIOConfig{Pulse: simPinPulse})
				if err != nil {
					return err
				}
				for i, pin := range originalPinOrder {
					id := fmt.Sprintf("w%d", i)
					r.call(id, "on", func() error { return g.PowerOn(context.Background(), bbb(id, pin)) })
				}
				return nil
			},
		},
		{
			// Three workers at once, two of them on the same chip.
			name: "concurrent", poll: []string{originalPins["P9_12"], originalPins["P9_23"], originalPins["P9_25"]},
			run: func(r *simReport) error {
				g, err := ctrl(power.GPIOConfig{})
				if err != nil {
					return err
				}
				var wg sync.WaitGroup
				for id, pin := range map[string]string{"w0": "P9_12", "w2": "P9_23", "w3": "P9_25"} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r.call(id, "on", func() error { return g.PowerOn(context.Background(), bbb(id, pin)) })
					}()
				}
				wg.Wait()
				return nil
			},
		},
		{
			// A power-on while a forced off runs on the same worker waits.
			name: "same-worker-waits", poll: []string{originalPins["P8_8"]},
			run: func(r *simReport) error {
				g, err := ctrl(power.GPIOConfig{ForcedOffHold: simWaitHold})
				if err != nil {
					return err
				}
				w := bbb("w5", "P8_8")
				done := make(chan struct{})
				go func() {
					defer close(done)
					r.call(w.ID, "off", func() error { return g.PowerOff(context.Background(), w) })
				}()
				time.Sleep(100 * time.Millisecond)
				r.call(w.ID, "on", func() error { return g.PowerOn(context.Background(), w) })
				<-done
				return nil
			},
		},
		{
			// ... and gives up with a clear error when its context ends first.
			name: "same-worker-timeout", poll: []string{originalPins["P8_10"]},
			run: func(r *simReport) error {
				g, err := ctrl(power.GPIOConfig{ForcedOffHold: simWaitHold})
				if err != nil {
					return err
				}
				w := bbb("w6", "P8_10")
				done := make(chan struct{})
				go func() {
					defer close(done)
					r.call(w.ID, "off", func() error { return g.PowerOff(context.Background(), w) })
				}()
				time.Sleep(100 * time.Millisecond)
				// The deadline starts inside the timed call: started before
				// it, the call measured short of 200 ms under TCG (198.7).
				r.call(w.ID, "on", func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
					defer cancel()
					return g.PowerOn(ctx, w)
				})
				<-done
				return nil
			},
		},
		{
			// Inverted wiring, given as chip and line: idle low, pressed high.
			name: "active-high", poll: []string{"GPIO0_5"}, pullDown: []string{"GPIO0_5"},
			run: func(r *simReport) error {
				g, err := ctrl(power.GPIOConfig{ActiveHigh: true, Pulse: simHighPulse})
				if err != nil {
					return err
				}
				r.call("wah", "on", func() error { return g.PowerOn(context.Background(), bbbChipLine("wah", "gpiochip0", 5)) })
				return nil
			},
		},
		{
			name: "errors",
			run: func(r *simReport) error {
				g, err := ctrl(power.GPIOConfig{})
				if err != nil {
					return err
				}
				// Another program holds gpiochip2 line 9.
				other, err := gpiocdev.RequestLine("gpiochip2", 9, gpiocdev.WithConsumer("other-tool"), gpiocdev.AsOutput(0))
				if err != nil {
					return fmt.Errorf("hold gpiochip2 line 9: %w", err)
				}
				defer other.Close()
				for _, w := range errorWorkers() {
					r.call(w.ID, "on", func() error { return g.PowerOn(context.Background(), w) })
				}
				r.call("verify-good", "verify", func() error {
					var ws []cluster.Worker
					for i, pin := range originalPinOrder {
						ws = append(ws, bbb(fmt.Sprintf("w%d", i), pin))
					}
					return g.Verify(ws)
				})
				r.call("verify-bad", "verify", func() error { return g.Verify(errorWorkers()) })
				return nil
			},
		},
	}
}

// errorWorkers are workers whose power line cannot be pressed, by id.
func errorWorkers() []cluster.Worker {
	return []cluster.Worker{
		bbbChipLine("missing-chip", "gpiochip7", 3),
		bbbChipLine("bad-line", "gpiochip0", 40),
		bbbChipLine("busy-line", "gpiochip2", 9),
		bbb("bad-pin", "P9_99"),
		{ID: "no-line", Kind: cluster.KindBBB},
	}
}

// originalPinLines are the simulated lines of the original cluster's pins.
func originalPinLines() []string {
	var l []string
	for _, p := range originalPinOrder {
		l = append(l, originalPins[p])
	}
	return l
}

// runScenario polls sc's lines while it runs and collects the line-info
// events it caused.
func runScenario(sim *gpioSim, watch *infoWatch, sc guestScenario) (*simReport, error) {
	for _, name := range sc.pullDown {
		if err := sim.setPull(name, "pull-down"); err != nil {
			return nil, err
		}
		defer sim.setPull(name, "pull-up")
	}
	r := &simReport{Scenario: sc.name}
	p, err := startPoller(sim, sc.poll)
	if err != nil {
		return nil, err
	}
	mark := watch.mark()
	runErr := sc.run(r)
	// Let the poller see the last level and the watcher the last event.
	time.Sleep(20 * time.Millisecond)
	r.Lines = p.stop()
	r.Info = watch.since(mark)
	if runErr != nil {
		return nil, runErr
	}
	held, err := sim.requested()
	if err != nil {
		return nil, err
	}
	r.StillRequested = held
	return r, nil
}

// gpioSim is a gpio-sim device made through configfs.
type gpioSim struct {
	dir   string // its configfs directory
	chips []simChip
}

const configfsSim = "/sys/kernel/config/gpio-sim"

// newGPIOSim creates a gpio-sim device with simBanks banks of simLines
// named lines, every line pulled up as PWR_BUT is on the board.
func newGPIOSim(name string) (*gpioSim, error) {
	s := &gpioSim{dir: filepath.Join(configfsSim, name)}
	if err := os.Mkdir(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create gpio-sim device (kernel without CONFIG_GPIO_SIM or configfs?): %w", err)
	}
	for b := 0; b < simBanks; b++ {
		bank := filepath.Join(s.dir, fmt.Sprintf("bank%d", b))
		if err := os.Mkdir(bank, 0o755); err != nil {
			return nil, err
		}
		if err := writeAttr(filepath.Join(bank, "num_lines"), strconv.Itoa(simLines)); err != nil {
			return nil, err
		}
		if err := writeAttr(filepath.Join(bank, "label"), fmt.Sprintf("mfsim-bank%d", b)); err != nil {
			return nil, err
		}
		for o := 0; o < simLines; o++ {
			line := filepath.Join(bank, fmt.Sprintf("line%d", o))
			if err := os.Mkdir(line, 0o755); err != nil {
				return nil, err
			}
			if err := writeAttr(filepath.Join(line, "name"), simLineName(b, o)); err != nil {
				return nil, err
			}
		}
	}
	if err := writeAttr(filepath.Join(s.dir, "live"), "1"); err != nil {
		return nil, fmt.Errorf("bring gpio-sim device live: %w", err)
	}
	for b := 0; b < simBanks; b++ {
		name, err := os.ReadFile(filepath.Join(s.dir, fmt.Sprintf("bank%d", b), "chip_name"))
		if err != nil {
			return nil, err
		}
		c := simChip{Bank: b, Name: strings.TrimSpace(string(name))}
		chip, err := gpiocdev.NewChip(c.Name)
		if err != nil {
			return nil, fmt.Errorf("open simulated %s: %w", c.Name, err)
		}
		c.Label, c.Lines = chip.Label, chip.Lines()
		chip.Close()
		s.chips = append(s.chips, c)
		for o := 0; o < simLines; o++ {
			if err := s.setPull(simLineName(b, o), "pull-up"); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

func writeAttr(path, v string) error {
	if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// line maps a simulated line name to its chip and offset.
func (s *gpioSim) line(name string) (chip string, offset int, err error) {
	b, o, err := parseSimLineName(name)
	if err != nil {
		return "", 0, err
	}
	if b < 0 || b >= len(s.chips) || o < 0 || o >= simLines {
		return "", 0, fmt.Errorf("no simulated line %s", name)
	}
	return s.chips[b].Name, o, nil
}

// attr is a gpio-sim sysfs attribute of a line (value or pull).
func (s *gpioSim) attr(name, attr string) (string, error) {
	chip, o, err := s.line(name)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("/sys/bus/gpio/devices/%s/sim_gpio%d/%s", chip, o, attr), nil
}

func (s *gpioSim) setPull(name, pull string) error {
	p, err := s.attr(name, "pull")
	if err != nil {
		return err
	}
	return writeAttr(p, pull)
}

// requested lists every simulated line that is currently requested.
func (s *gpioSim) requested() ([]string, error) {
	var held []string
	for _, c := range s.chips {
		chip, err := gpiocdev.NewChip(c.Name)
		if err != nil {
			return nil, err
		}
		for o := 0; o < c.Lines; o++ {
			info, err := chip.LineInfo(o)
			if err != nil {
				chip.Close()
				return nil, err
			}
			if info.Used {
				held = append(held, fmt.Sprintf("%s by %q", lineKey(c.Name, o), info.Consumer))
			}
		}
		chip.Close()
	}
	return held, nil
}

// poller reads gpio-sim's value attribute of some lines every millisecond
// and records each change with its CLOCK_MONOTONIC time.
type poller struct {
	quit   chan struct{}
	done   chan struct{}
	traces map[string]*simTrace
}

func startPoller(sim *gpioSim, names []string) (*poller, error) {
	type polled struct {
		f     *os.File
		trace *simTrace
	}
	var lines []polled
	p := &poller{quit: make(chan struct{}), done: make(chan struct{}), traces: map[string]*simTrace{}}
	read := func(f *os.File) (int, error) {
		var b [8]byte
		n, err := f.ReadAt(b[:], 0)
		if n == 0 {
			return 0, fmt.Errorf("read %s: %w", f.Name(), err)
		}
		return strconv.Atoi(strings.TrimSpace(string(b[:n])))
	}
	for _, name := range names {
		path, err := sim.attr(name, "value")
		if err != nil {
			return nil, err
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		v, err := read(f)
		if err != nil {
			return nil, err
		}
		chip, o, _ := sim.line(name)
		t := &simTrace{Name: name, Initial: v, Final: v, Changes: []simChange{}}
		p.traces[lineKey(chip, o)] = t
		lines = append(lines, polled{f, t})
	}
	go func() {
		defer close(p.done)
		defer func() {
			for _, l := range lines {
				l.f.Close()
			}
		}()
		for {
			for _, l := range lines {
				v, err := read(l.f)
				if err != nil {
					continue
				}
				l.trace.Polls++
				if v != l.trace.Final {
					l.trace.Changes = append(l.trace.Changes, simChange{MS: monoMS(), V: v})
					l.trace.Final = v
				}
			}
			select {
			case <-p.quit:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return p, nil
}

func (p *poller) stop() map[string]*simTrace {
	close(p.quit)
	<-p.done
	return p.traces
}

// infoWatch records line-info change events of every simulated line: who
// requests and releases which line, stamped by the kernel.
type infoWatch struct {
	mu     sync.Mutex
	events []simInfo
	chips  []*gpiocdev.Chip
}

func newInfoWatch(sim *gpioSim) (*infoWatch, error) {
	w := &infoWatch{}
	for _, c := range sim.chips {
		chip, err := gpiocdev.NewChip(c.Name)
		if err != nil {
			return nil, err
		}
		w.chips = append(w.chips, chip)
		name := c.Name
		for o := 0; o < c.Lines; o++ {
			_, err := chip.WatchLineInfo(o, func(e gpiocdev.LineInfoChangeEvent) {
				ev := simInfo{
					MS: float64(e.Timestamp) / 1e6, Chip: name, Offset: e.Info.Offset, Name: e.Info.Name,
					Consumer: e.Info.Consumer, ActiveLow: e.Info.Config.ActiveLow,
					Output: e.Info.Config.Direction == gpiocdev.LineDirectionOutput,
				}
				switch e.Type {
				case gpiocdev.LineRequested:
					ev.Event = "requested"
				case gpiocdev.LineReleased:
					ev.Event = "released"
				case gpiocdev.LineReconfigured:
					ev.Event = "reconfigured"
				}
				w.mu.Lock()
				w.events = append(w.events, ev)
				w.mu.Unlock()
			})
			if err != nil {
				w.close()
				return nil, fmt.Errorf("watch %s line %d: %w", name, o, err)
			}
		}
	}
	return w, nil
}

func (w *infoWatch) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.events)
}

func (w *infoWatch) since(mark int) []simInfo {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]simInfo(nil), w.events[mark:]...)
}

func (w *infoWatch) close() {
	for _, c := range w.chips {
		c.Close()
	}
}
