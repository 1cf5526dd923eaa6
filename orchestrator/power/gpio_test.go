package power_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/initramfs"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/orchestrator/clock"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/target"
)

// TestMain turns this test binary into the gpio-sim guest when it is PID 1
// of the VM that TestGPIOSim boots.
func TestMain(m *testing.M) {
	if os.Getpid() == 1 && os.Getenv(guestEnv) == "1" {
		guestMain()
	}
	os.Exit(m.Run())
}

// originalPins is the original cluster's wiring, worker 0..9, with the
// AM335x GPIO each header pin carries, from the BeagleBone Black System
// Reference Manual's P8/P9 header tables (kernel GPIO number = 32*bank+bit
// in brackets). Written out here, independently of inventory's pin table,
// so the test can catch a wrong entry there.
var (
	originalPinOrder = []string{"P9_12", "P9_15", "P9_23", "P9_25", "P9_27", "P8_8", "P8_10", "P8_11", "P8_14", "P9_26"}
	originalPins     = map[string]string{
		"P9_12": "GPIO1_28", // gpio60
		"P9_15": "GPIO1_16", // gpio48
		"P9_23": "GPIO1_17", // gpio49
		"P9_25": "GPIO3_21", // gpio117
		"P9_27": "GPIO3_19", // gpio115
		"P8_8":  "GPIO2_3",  // gpio67
		"P8_10": "GPIO2_4",  // gpio68
		"P8_11": "GPIO1_13", // gpio45
		"P8_14": "GPIO0_26", // gpio26
		"P9_26": "GPIO0_14", // gpio14
	}
)

func intp(i int) *int { return &i }

func TestResolveLine(t *testing.T) {
	tests := []struct {
		name    string
		w       cluster.Worker
		want    power.WorkerLine
		wantErr []string // substrings of the error; nil: no error
	}{
		{"pin", bbb("w0", "P9_12"), power.WorkerLine{Line: cluster.Line{Chip: "gpiochip1", Offset: 28}, Pin: "P9_12"}, nil},
		{"pin on bank 3", bbb("w3", "P9_25"), power.WorkerLine{Line: cluster.Line{Chip: "gpiochip3", Offset: 21}, Pin: "P9_25"}, nil},
		{"chip and line", bbbChipLine("w1", "gpiochip4", 7), power.WorkerLine{Line: cluster.Line{Chip: "gpiochip4", Offset: 7}}, nil},
		{"unknown pin", bbb("w2", "P9_1"), power.WorkerLine{}, []string{"worker w2", "P9_1", "not a BeagleBone Black GPIO header pin"}},
		{"pin and chip", cluster.Worker{ID: "w4", Kind: cluster.KindBBB, Power: cluster.GPIOPower{Pin: "P9_12", Chip: "gpiochip1", Line: intp(28)}},
			power.WorkerLine{}, []string{"worker w4", "both pin P9_12 and chip/line"}},
		{"nothing", cluster.Worker{ID: "w5", Kind: cluster.KindBBB}, power.WorkerLine{}, []string{"worker w5", "power.pin", "power.chip and power.line"}},
		{"chip without line", cluster.Worker{ID: "w6", Kind: cluster.KindBBB, Power: cluster.GPIOPower{Chip: "gpiochip0"}},
			power.WorkerLine{}, []string{"worker w6", "no power line"}},
		{"negative line", bbbChipLine("w7", "gpiochip0", -1), power.WorkerLine{}, []string{"worker w7", "power.line -1"}},
		{"vm worker", cluster.Worker{ID: "vm0", Kind: cluster.KindVM}, power.WorkerLine{}, []string{"worker vm0", `kind "vm"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := power.ResolveLine(tt.w)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if got != tt.want {
					t.Fatalf("got %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, got %+v", got)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

// TestOriginalPinTable checks inventory's pin table against this file's
// independent copy for the original cluster's ten pins.
func TestOriginalPinTable(t *testing.T) {
	for _, pin := range originalPinOrder {
		l, err := cluster.LookupPin(pin)
		if err != nil {
			t.Errorf("%s: %v", pin, err)
			continue
		}
		bank, bit, err := parseSimLineName(originalPins[pin])
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("gpiochip%d", bank); l.Chip != want || l.Offset != bit {
			t.Errorf("%s maps to %s line %d, want %s line %d (%s)", pin, l.Chip, l.Offset, want, bit, originalPins[pin])
		}
	}
}

func TestNewGPIOConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     power.GPIOConfig
		want    power.GPIOConfig // Log ignored
		wantErr string
	}{
		{"defaults", power.GPIOConfig{},
			power.GPIOConfig{Pulse: 500 * time.Millisecond, ForcedOffHold: 10 * time.Second, ReleaseGap: 500 * time.Millisecond, Consumer: "mforch"}, ""},
		{"custom", power.GPIOConfig{Pulse: time.Second, ForcedOffHold: 12 * time.Second, ReleaseGap: time.Second, ActiveHigh: true, Consumer: "lab"},
			power.GPIOConfig{Pulse: time.Second, ForcedOffHold: 12 * time.Second, ReleaseGap: time.Second, ActiveHigh: true, Consumer: "lab"}, ""},
		{"hold not longer than pulse", power.GPIOConfig{Pulse: 2 * time.Second, ForcedOffHold: 2 * time.Second}, power.GPIOConfig{}, "must be longer than the power-on pulse"},
		{"negative pulse", power.GPIOConfig{Pulse: -time.Second}, power.GPIOConfig{}, "negative"},
		{"negative gap", power.GPIOConfig{ReleaseGap: -time.Second}, power.GPIOConfig{}, "negative"},
		{"long consumer", power.GPIOConfig{Consumer: strings.Repeat("x", 32)}, power.GPIOConfig{}, "31 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := power.NewGPIO(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := g.Config()
			if got.Lines == nil || got.Clock == nil {
				t.Fatal("no default lines or clock")
			}
			got.Log, got.Lines, got.Clock = nil, nil, nil
			if got != tt.want {
				t.Fatalf("config %+v, want %+v", got, tt.want)
			}
		})
	}
}

// Tolerances for levels and events observed in the TCG guest. A press can
// never be shorter than configured as the kernel stamps it (request to
// release); the polled level may look shorter by a few poll periods. Late
// is generous: TCG on a shared two-core host stalls.
const (
	tolEarly = 25 * time.Millisecond
	tolLate  = 300 * time.Millisecond
)

// TestGPIOSim boots the x86 worker kernel in QEMU with this test binary as
// PID 1. The guest creates gpio-sim chips, presses their lines with the real
// GPIO controller and reports what the lines did; the checks below run on
// those reports.
func TestGPIOSim(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a QEMU guest with gpio-sim")
	}
	reports, console := bootGPIOSimGuest(t)
	checks := []struct {
		scenario string
		check    func(t *testing.T, r *simReport)
	}{
		{"setup", checkSetup},
		{"power-on", func(t *testing.T, r *simReport) {
			checkCalls(t, r, 1)
			checkPresses(t, r, pinKey("P9_12"), true, power.DefaultPulse)
		}},
		{"power-off", func(t *testing.T, r *simReport) {
			checkCalls(t, r, 1)
			checkPresses(t, r, pinKey("P9_15"), true, simHold)
		}},
		{"pins", checkPins},
		{"concurrent", checkConcurrent},
		{"same-worker-waits", checkSameWorkerWaits},
		{"same-worker-timeout", checkSameWorkerTimeout},
		{"active-high", func(t *testing.T, r *simReport) {
			checkCalls(t, r, 1)
			checkPresses(t, r, "gpiochip0/5", false, simHighPulse)
		}},
		{"errors", checkErrors},
	}
	failed := false
	for _, c := range checks {
		ok := t.Run(c.scenario, func(t *testing.T) {
			r, found := reports[c.scenario]
			if !found {
				t.Fatalf("the guest reported no %q scenario", c.scenario)
			}
			if len(r.StillRequested) > 0 {
				t.Errorf("lines still requested after the scenario: %v", r.StillRequested)
			}
			c.check(t, r)
		})
		failed = failed || !ok
	}
	if failed {
		t.Logf("guest console:\n%s", console)
	}
}

// bootGPIOSimGuest builds this package's test binary for the guest, puts it
// in an initramfs as /init, boots the cached worker kernel with it and
// returns the guest's reports by scenario, and its console.
func bootGPIOSimGuest(t *testing.T) (map[string]*simReport, string) {
	t.Helper()
	needed := func(what string, err error) {
		if err == nil {
			return
		}
		if os.Getenv("CI") != "" {
			t.Fatalf("%s: %v", what, err)
		}
		t.Skipf("%s: %v", what, err)
	}
	qemu, err := exec.LookPath(target.X86.QEMU.Binary)
	needed("QEMU missing (make deps installs it)", err)
	repo, err := builder.FindRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// The worker kernel plus the test-only gpio-sim fragment, from the cache
	// (built once by make test: mfbuild kernel --fragment ...).
	k, err := builder.Kernel(ctx, builder.Options{RepoDir: repo, Arch: target.X86, Cache: cache.Cache{Dir: cache.DefaultDir()},
		KernelFragments: []string{filepath.Join(repo, "configs", "kernel", "test-gpio-sim.config")}})
	if err != nil {
		t.Fatal(err)
	}
	bzImage := k.Output(k.Manifest.Outputs[0].Name)

	dir := t.TempDir()
	bin := filepath.Join(dir, "power.test")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-trimpath", "-ldflags=-s -w", "-o", bin, "./orchestrator/power")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c for the guest: %v\n%s", err, out)
	}
	a, err := initramfs.New(initramfs.WithInit(bin))
	if err != nil {
		t.Fatal(err)
	}
	cpio := filepath.Join(dir, "gpiosim.cpio")
	f, err := os.Create(cpio)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// The QEMU controller's own command line (TCG: the tolerances assume
	// it, and nested KVM is not to be relied on). The worker's network
	// device is there but unused.
	cmdline := "console=ttyS0 reboot=t panic=-1 quiet random.trust_cpu=on tsc=reliable " + guestEnv + "=1"
	if khz := power.HostTSCkHz(); khz > 0 {
		// As the QEMU controller does under TCG: without it the guest's
		// clock falls back to 4 ms jiffies on a loaded host.
		cmdline += fmt.Sprintf(" tsc_early_khz=%d", khz)
	}
	args := power.QEMUArgs(target.X86, "tcg", bzImage, cpio, cluster.Worker{ID: "gpiosim"}, cmdline)
	qctx, qcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer qcancel()
	cmd := exec.CommandContext(qctx, qemu, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	runErr := cmd.Run()
	console := out.String()
	t.Logf("guest ran %s", time.Since(start).Round(time.Millisecond))

	reports := map[string]*simReport{}
	done := false
	sc := bufio.NewScanner(strings.NewReader(console))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case strings.HasPrefix(line, resultPrefix):
			var r simReport
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, resultPrefix)), &r); err != nil {
				t.Fatalf("bad guest report %q: %v\nconsole:\n%s", line, err, console)
			}
			reports[r.Scenario] = &r
		case strings.HasPrefix(line, fatalPrefix):
			t.Errorf("guest: %s", strings.TrimPrefix(line, fatalPrefix))
		case line == doneMarker:
			done = true
		}
	}
	if runErr != nil || !done {
		t.Fatalf("guest did not finish (qemu: %v, done marker: %v)\nconsole:\n%s", runErr, done, console)
	}
	return reports, console
}

// pinKey is the report key of the simulated line an original pin is wired
// to: bank N is gpiochipN (checked by checkSetup).
func pinKey(pin string) string {
	bank, bit, err := parseSimLineName(originalPins[pin])
	if err != nil {
		panic(err)
	}
	return lineKey(fmt.Sprintf("gpiochip%d", bank), bit)
}

func checkSetup(t *testing.T, r *simReport) {
	// Timestamps are only as fine as the guest's clock: jiffies (4 ms at
	// HZ=250) unless the kernel runs on the TSC (tsc_early_khz).
	t.Logf("guest clocksource: %s", r.Clocksource)
	if len(r.Chips) != simBanks {
		t.Fatalf("%d simulated chips, want %d: %+v", len(r.Chips), simBanks, r.Chips)
	}
	for i, c := range r.Chips {
		if c.Bank != i || c.Name != fmt.Sprintf("gpiochip%d", i) || c.Lines != simLines || c.Label != fmt.Sprintf("mfsim-bank%d", i) {
			t.Errorf("bank %d: %+v, want gpiochip%d with %d lines labelled mfsim-bank%d", i, c, i, simLines, i)
		}
	}
}

// checkCalls wants n calls, none failed.
func checkCalls(t *testing.T, r *simReport, n int) {
	t.Helper()
	if len(r.Calls) != n {
		t.Errorf("%d calls, want %d: %+v", len(r.Calls), n, r.Calls)
	}
	for _, c := range r.Calls {
		if c.Err != "" {
			t.Errorf("%s %s: %s", c.Worker, c.Op, c.Err)
		}
	}
}

// interval is a stretch of time in guest CLOCK_MONOTONIC milliseconds.
type interval struct{ From, To float64 }

func (i interval) Dur() time.Duration {
	return time.Duration((i.To - i.From) * float64(time.Millisecond))
}

// pressed returns the intervals during which tr was at the pressed level.
func pressed(tr *simTrace, activeLow bool) []interval {
	level := 1
	if activeLow {
		level = 0
	}
	var out []interval
	open := math.NaN()
	if tr.Initial == level {
		open = math.Inf(-1)
	}
	for _, c := range tr.Changes {
		if c.V == level {
			open = c.MS
		} else if !math.IsNaN(open) {
			out = append(out, interval{open, c.MS})
			open = math.NaN()
		}
	}
	if !math.IsNaN(open) {
		out = append(out, interval{open, math.Inf(1)})
	}
	return out
}

// kernelPresses pairs the requested and released events of line key.
func kernelPresses(t *testing.T, r *simReport, key string) ([]interval, []simInfo) {
	t.Helper()
	var out []interval
	var reqs []simInfo
	open := math.NaN()
	for _, e := range r.Info {
		if lineKey(e.Chip, e.Offset) != key {
			continue
		}
		switch e.Event {
		case "requested":
			if !math.IsNaN(open) {
				t.Errorf("%s requested twice without a release", key)
			}
			open = e.MS
			reqs = append(reqs, e)
		case "released":
			if math.IsNaN(open) {
				t.Errorf("%s released without a request", key)
				continue
			}
			out = append(out, interval{open, e.MS})
			open = math.NaN()
		default:
			t.Errorf("%s: unexpected %s event", key, e.Event)
		}
	}
	if !math.IsNaN(open) {
		t.Errorf("%s still requested at the end of the scenario", key)
	}
	return out, reqs
}

func within(d, want time.Duration, early time.Duration) bool {
	return d >= want-early && d <= want+tolLate
}

// checkPresses checks line key was pressed once per entry of wants, for
// that long, by mforch, and was idle before and after.
func checkPresses(t *testing.T, r *simReport, key string, activeLow bool, wants ...time.Duration) []interval {
	t.Helper()
	tr := r.Lines[key]
	if tr == nil {
		t.Fatalf("no trace of %s", key)
	}
	idle := 1
	if !activeLow {
		idle = 0
	}
	if tr.Initial != idle || tr.Final != idle {
		t.Errorf("%s: level %d before and %d after, want %d (idle) both", key, tr.Initial, tr.Final, idle)
	}
	levels := pressed(tr, activeLow)
	kern, reqs := kernelPresses(t, r, key)
	if len(levels) != len(wants) || len(kern) != len(wants) {
		t.Fatalf("%s: %d pressed stretches polled and %d requests, want %d each (changes %+v, events %+v)",
			key, len(levels), len(kern), len(wants), tr.Changes, r.Info)
	}
	for i, want := range wants {
		lv, k := levels[i], kern[i]
		t.Logf("%s (%s) press %d: level pressed for %.1f ms (polled, %d polls), requested to released %.1f ms; configured %s",
			key, tr.Name, i+1, lv.To-lv.From, tr.Polls, k.To-k.From, want)
		if !within(lv.Dur(), want, tolEarly) {
			t.Errorf("%s: level pressed for %s, want %s (-%s/+%s)", key, lv.Dur(), want, tolEarly, tolLate)
		}
		// Request to release brackets the press: never shorter than it.
		if !within(k.Dur(), want, 0) {
			t.Errorf("%s: requested for %s, want %s (+%s)", key, k.Dur(), want, tolLate)
		}
		// The poller sees a change late, never early: the polled press must
		// begin and end inside the request, give or take the poll's lag
		// (up to tolLate on a loaded host under TCG; 33 ms was seen in CI).
		late := float64(tolLate / time.Millisecond)
		if lv.From < k.From-1 || lv.From > k.From+late || lv.To > k.To+late {
			t.Errorf("%s: pressed %.1f..%.1f ms but requested %.1f..%.1f ms: the level changed outside the request", key, lv.From, lv.To, k.From, k.To)
		}
		req := reqs[i]
		if req.Consumer != power.DefaultConsumer || !req.Output || req.ActiveLow != activeLow {
			t.Errorf("%s requested as %+v, want an output by %q with active-low %v", key, req, power.DefaultConsumer, activeLow)
		}
	}
	// Nothing else was touched.
	for _, e := range r.Info {
		if lineKey(e.Chip, e.Offset) != key && e.Consumer == power.DefaultConsumer {
			t.Errorf("unexpected event on %s: %+v", lineKey(e.Chip, e.Offset), e)
		}
	}
	return levels
}

func checkPins(t *testing.T, r *simReport) {
	checkCalls(t, r, len(originalPinOrder))
	var reqs []simInfo
	for _, e := range r.Info {
		if e.Event == "requested" {
			reqs = append(reqs, e)
		}
	}
	if len(reqs) != len(originalPinOrder) {
		t.Fatalf("%d lines requested, want %d: %+v", len(reqs), len(originalPinOrder), reqs)
	}
	for i, pin := range originalPinOrder {
		// The line the controller requested for worker i carries the name
		// of the AM335x GPIO that pin i is wired to.
		if reqs[i].Name != originalPins[pin] || reqs[i].Consumer != power.DefaultConsumer {
			t.Errorf("worker w%d (pin %s): requested %s line %d named %q by %q, want the line named %q",
				i, pin, reqs[i].Chip, reqs[i].Offset, reqs[i].Name, reqs[i].Consumer, originalPins[pin])
			continue
		}
		levels := pressed(r.Lines[pinKey(pin)], true)
		if len(levels) != 1 || !within(levels[0].Dur(), simPinPulse, tolEarly) {
			t.Errorf("pin %s (%s): pressed %+v, want one press of %s", pin, pinKey(pin), levels, simPinPulse)
			continue
		}
		t.Logf("pin %s -> %s line %d (%s): pressed %.1f ms", pin, reqs[i].Chip, reqs[i].Offset, reqs[i].Name, levels[0].To-levels[0].From)
	}
}

func checkConcurrent(t *testing.T, r *simReport) {
	checkCalls(t, r, 3)
	var all []interval
	for _, pin := range []string{"P9_12", "P9_23", "P9_25"} {
		key := pinKey(pin)
		tr := r.Lines[key]
		if tr == nil {
			t.Fatalf("no trace of %s", key)
		}
		levels := pressed(tr, true)
		if len(levels) != 1 || !within(levels[0].Dur(), power.DefaultPulse, tolEarly) {
			t.Fatalf("%s: pressed %+v, want one press of %s", key, levels, power.DefaultPulse)
		}
		all = append(all, levels[0])
	}
	latestStart, earliestEnd := math.Inf(-1), math.Inf(1)
	for _, iv := range all {
		latestStart = math.Max(latestStart, iv.From)
		earliestEnd = math.Min(earliestEnd, iv.To)
	}
	overlap := earliestEnd - latestStart
	t.Logf("three presses overlapped for %.1f ms of %s", overlap, power.DefaultPulse)
	// Run one after another they would not overlap at all.
	if overlap < float64(power.DefaultPulse/time.Millisecond)/2 {
		t.Errorf("presses on different lines overlapped for %.1f ms only: %+v", overlap, all)
	}
}

func callOf(t *testing.T, r *simReport, worker, op string) simCall {
	t.Helper()
	for _, c := range r.Calls {
		if c.Worker == worker && c.Op == op {
			return c
		}
	}
	t.Fatalf("no %s call for %s: %+v", op, worker, r.Calls)
	return simCall{}
}

func checkSameWorkerWaits(t *testing.T, r *simReport) {
	checkCalls(t, r, 2)
	levels := checkPresses(t, r, pinKey("P8_8"), true, simWaitHold, power.DefaultPulse)
	kern, _ := kernelPresses(t, r, pinKey("P8_8"))
	if len(levels) != 2 || len(kern) != 2 {
		return // checkPresses said why
	}
	// The button rested for the release gap between the two presses, so
	// the PMIC sees two presses, not one long one.
	gap := time.Duration((levels[1].From - levels[0].To) * float64(time.Millisecond))
	kgap := time.Duration((kern[1].From - kern[0].To) * float64(time.Millisecond))
	t.Logf("released between the presses for %s (polled), %s (released to requested)", gap, kgap)
	if !within(gap, power.DefaultReleaseGap, tolEarly) || !within(kgap, power.DefaultReleaseGap, 0) {
		t.Errorf("released for %s polled, %s by the kernel's events, between the presses; want the %s release gap",
			gap, kgap, power.DefaultReleaseGap)
	}
	off, on := callOf(t, r, "w5", "off"), callOf(t, r, "w5", "on")
	// The power-on, called 100 ms into the hold, waited for its end.
	if on.EndMS < off.EndMS+float64((power.DefaultReleaseGap+power.DefaultPulse)/time.Millisecond) {
		t.Errorf("power-on ended at %.1f ms, less than a gap and a pulse after the forced off ended at %.1f ms", on.EndMS, off.EndMS)
	}
	t.Logf("power-on called %.1f ms into the hold, returned %.1f ms after the hold ended", on.StartMS-off.StartMS, on.EndMS-off.EndMS)
}

func checkSameWorkerTimeout(t *testing.T, r *simReport) {
	checkPresses(t, r, pinKey("P8_10"), true, simWaitHold)
	off, on := callOf(t, r, "w6", "off"), callOf(t, r, "w6", "on")
	if off.Err != "" {
		t.Errorf("forced off: %s", off.Err)
	}
	if !on.Deadline {
		t.Errorf("power-on during the hold: error %q, want one wrapping context.DeadlineExceeded", on.Err)
	}
	for _, s := range []string{"worker w6", "gpiochip2 line 4 (pin P8_10)", "gave up waiting", "forced power-off hold"} {
		if !strings.Contains(on.Err, s) {
			t.Errorf("error %q does not mention %q", on.Err, s)
		}
	}
	if d := time.Duration((on.EndMS - on.StartMS) * float64(time.Millisecond)); !within(d, 200*time.Millisecond, 0) {
		t.Errorf("power-on gave up after %s, want its 200 ms deadline", d)
	}
	t.Logf("power-on gave up after %.1f ms: %s", on.EndMS-on.StartMS, on.Err)
}

func checkErrors(t *testing.T, r *simReport) {
	want := map[string][]string{
		"missing-chip": {"worker missing-chip", "gpiochip7 line 3", "does not exist", "is this the orchestrator BeagleBone?", "gpiodetect"},
		"bad-line":     {"worker bad-line", "gpiochip0 line 40", `"mfsim-bank0"`, "has 32 lines", "gpioinfo gpiochip0"},
		"busy-line":    {"worker busy-line", "gpiochip2 line 9", `in use by "other-tool"`, "gpioinfo gpiochip2", "device or resource busy"},
		"bad-pin":      {"worker bad-pin", "P9_99", "not a BeagleBone Black GPIO header pin"},
		"no-line":      {"worker no-line", "power.pin"},
		"verify-bad":   {"worker missing-chip", "worker bad-line", "worker busy-line", "worker bad-pin", "worker no-line"},
	}
	if len(r.Calls) != len(want)+1 {
		t.Errorf("%d calls, want %d", len(r.Calls), len(want)+1)
	}
	for _, c := range r.Calls {
		if c.Worker == "verify-good" {
			if c.Err != "" {
				t.Errorf("Verify of the original cluster's workers: %s", c.Err)
			}
			continue
		}
		subs, ok := want[c.Worker]
		if !ok {
			t.Errorf("unexpected call %+v", c)
			continue
		}
		if c.Err == "" {
			t.Errorf("%s %s: no error", c.Worker, c.Op)
			continue
		}
		for _, s := range subs {
			if !strings.Contains(c.Err, s) {
				t.Errorf("%s: error %q does not mention %q", c.Worker, c.Err, s)
			}
		}
		// Nothing was pressed: an error comes back well before a pulse ends.
		if d := time.Duration((c.EndMS - c.StartMS) * float64(time.Millisecond)); d >= power.DefaultPulse/2 {
			t.Errorf("%s: the failing call took %s", c.Worker, d)
		}
		t.Logf("%s: %s", c.Worker, c.Err)
	}
	for _, e := range r.Info {
		if e.Consumer == power.DefaultConsumer {
			t.Errorf("a failing call requested a line: %+v", e)
		}
	}
}

// fakeLines is a GPIO chip in memory: it logs every request, level change
// and release with the fake clock's time, and fails on request when told.
type fakeLines struct {
	clk        *clock.Fake
	mu         sync.Mutex
	log        []lineEvent
	requestErr error
	setErr     error
	held       map[string]bool // lines requested and not closed
}

type lineEvent struct {
	line      string // chip/offset
	what      string // request, set0, set1, close
	at        time.Time
	activeLow bool
	consumer  string
}

type fakeLine struct {
	f    *fakeLines
	line string
}

func (f *fakeLines) Request(workerID string, line power.WorkerLine, consumer string, activeLow bool) (power.Line, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := fmt.Sprintf("%s/%d", line.Chip, line.Offset)
	if f.requestErr != nil {
		return nil, fmt.Errorf("worker %s: PWR_BUT %s: %w", workerID, line, f.requestErr)
	}
	if f.held[key] {
		return nil, fmt.Errorf("worker %s: %s requested twice at once: %w", workerID, key, syscall.EBUSY)
	}
	f.held[key] = true
	f.log = append(f.log, lineEvent{line: key, what: "request", at: f.clk.Now(), activeLow: activeLow, consumer: consumer})
	return &fakeLine{f, key}, nil
}

func (l *fakeLine) SetValue(v int) error {
	l.f.mu.Lock()
	defer l.f.mu.Unlock()
	if l.f.setErr != nil {
		return l.f.setErr
	}
	l.f.log = append(l.f.log, lineEvent{line: l.line, what: fmt.Sprintf("set%d", v), at: l.f.clk.Now()})
	return nil
}

func (l *fakeLine) Close() error {
	l.f.mu.Lock()
	defer l.f.mu.Unlock()
	delete(l.f.held, l.line)
	l.f.log = append(l.f.log, lineEvent{line: l.line, what: "close", at: l.f.clk.Now()})
	return nil
}

// presses returns each press on key as [pressed, released] offsets from t0.
func (f *fakeLines) presses(key string, t0 time.Time) [][2]time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out [][2]time.Duration
	for _, e := range f.log {
		if e.line != key {
			continue
		}
		switch e.what {
		case "request":
			out = append(out, [2]time.Duration{e.at.Sub(t0), -1})
		case "set0":
			out[len(out)-1][1] = e.at.Sub(t0)
		}
	}
	return out
}

func newFakeGPIO(t *testing.T, cfg power.GPIOConfig) (*power.GPIO, *fakeLines, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	lines := &fakeLines{clk: clk, held: map[string]bool{}}
	cfg.Lines, cfg.Clock = lines, clk
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	g, err := power.NewGPIO(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g, lines, clk
}

// async runs fn and returns its error on a channel.
func async(fn func() error) chan error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return ch
}

func wait(t *testing.T, ch chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("press never returned")
	}
	return nil
}

// TestGPIOPressTiming: PowerOn holds the line pressed for the pulse and
// PowerOff for the forced-off hold, measured on the fake clock; the line
// is requested active-low (a direct wire) and labelled.
func TestGPIOPressTiming(t *testing.T) {
	g, lines, clk := newFakeGPIO(t, power.GPIOConfig{})
	t0 := clk.Now()
	w := bbb("w0", "P9_12")
	done := async(func() error { return g.PowerOn(context.Background(), w) })
	clk.WaitTimers(1)
	clk.Advance(power.DefaultPulse)
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second) // past the release gap
	done = async(func() error { return g.PowerOff(context.Background(), w) })
	clk.WaitTimers(1)
	clk.Advance(power.DefaultForcedOffHold)
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	got := lines.presses("gpiochip1/28", t0)
	want := [][2]time.Duration{{0, power.DefaultPulse}, {power.DefaultPulse + time.Second, 2*power.DefaultPulse + time.Second + power.DefaultForcedOffHold - power.DefaultPulse}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("presses %v, want %v", got, want)
	}
	if e := lines.log[0]; !e.activeLow || e.consumer != power.DefaultConsumer {
		t.Errorf("request %+v: want active-low, consumer %q", e, power.DefaultConsumer)
	}
	if len(lines.held) != 0 {
		t.Error("a line was not given back")
	}
}

// TestGPIOSameLineWaits: a press on a line that is being pressed waits for
// the first to end and then for the release gap; presses on other lines
// run at once.
func TestGPIOSameLineWaits(t *testing.T) {
	g, lines, clk := newFakeGPIO(t, power.GPIOConfig{ActiveHigh: true})
	t0 := clk.Now()
	off := async(func() error { return g.PowerOff(context.Background(), bbb("w0", "P9_12")) })
	clk.WaitTimers(1)
	on := async(func() error { return g.PowerOn(context.Background(), bbb("w0", "P9_12")) })
	other := async(func() error { return g.PowerOn(context.Background(), bbb("w1", "P9_15")) })
	clk.WaitTimers(2) // the hold and the other line's pulse; the second press on P9_12 waits for the lock
	clk.Advance(power.DefaultPulse)
	if err := wait(t, other); err != nil {
		t.Fatal(err)
	}
	clk.Advance(power.DefaultForcedOffHold - power.DefaultPulse)
	if err := wait(t, off); err != nil {
		t.Fatal(err)
	}
	clk.WaitTimers(1) // the release gap
	clk.Advance(power.DefaultReleaseGap)
	clk.WaitTimers(1) // the pulse
	clk.Advance(power.DefaultPulse)
	if err := wait(t, on); err != nil {
		t.Fatal(err)
	}
	hold, gap, pulse := power.DefaultForcedOffHold, power.DefaultReleaseGap, power.DefaultPulse
	if got, want := lines.presses("gpiochip1/28", t0), [][2]time.Duration{{0, hold}, {hold + gap, hold + gap + pulse}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("P9_12 presses %v, want %v (no overlap, release gap kept)", got, want)
	}
	if got, want := lines.presses("gpiochip1/16", t0), [][2]time.Duration{{0, pulse}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("P9_15 presses %v, want %v (in parallel)", got, want)
	}
	if lines.log[0].activeLow {
		t.Error("ActiveHigh wiring requested active-low")
	}
}

// TestGPIOCancel: a caller giving up mid-press releases the button at once
// (never left pressed); one giving up while waiting for the line never
// presses.
func TestGPIOCancel(t *testing.T) {
	g, lines, clk := newFakeGPIO(t, power.GPIOConfig{})
	t0 := clk.Now()
	ctx, cancel := context.WithCancel(context.Background())
	off := async(func() error { return g.PowerOff(ctx, bbb("w0", "P9_12")) })
	clk.WaitTimers(1)
	ctx2, cancel2 := context.WithCancel(context.Background())
	on := async(func() error { return g.PowerOn(ctx2, bbb("w0", "P9_12")) })
	clk.Advance(3 * time.Second)
	cancel2()
	if err := wait(t, on); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "gave up waiting") {
		t.Fatalf("waiting press cancelled: %v", err)
	}
	cancel()
	err := wait(t, off)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "cut short after 3s") {
		t.Fatalf("press cancelled: %v", err)
	}
	if got, want := lines.presses("gpiochip1/28", t0), [][2]time.Duration{{0, 3 * time.Second}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("presses %v, want %v", got, want)
	}
}

// TestGPIOErrors: a failed request or release is reported with the line,
// and the line's lock is free for the next press.
func TestGPIOErrors(t *testing.T) {
	g, lines, clk := newFakeGPIO(t, power.GPIOConfig{})
	w := bbb("w0", "P9_12")
	lines.requestErr = syscall.EBUSY
	if err := g.PowerOn(context.Background(), w); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("busy line: %v", err)
	}
	lines.requestErr = nil
	lines.setErr = errors.New("EIO")
	done := async(func() error { return g.PowerOn(context.Background(), w) })
	clk.WaitTimers(1)
	clk.Advance(power.DefaultPulse)
	if err := wait(t, done); err == nil || !strings.Contains(err.Error(), "may still be pressed") {
		t.Fatalf("failed release: %v", err)
	}
	if len(lines.held) != 0 {
		t.Error("line not given back after a failed release")
	}
	lines.setErr = nil
	clk.Advance(time.Second)
	done = async(func() error { return g.PowerOn(context.Background(), w) })
	clk.WaitTimers(1)
	clk.Advance(power.DefaultPulse)
	if err := wait(t, done); err != nil {
		t.Fatalf("press after errors: %v", err)
	}
	if err := g.PowerOn(context.Background(), cluster.Worker{ID: "x", Kind: cluster.KindBBB}); err == nil {
		t.Fatal("worker without a line")
	}
}
