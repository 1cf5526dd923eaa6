package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/initramfs"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/target"
)

// The cold-start benchmark (docs/performance.md): one boot of a QEMU worker
// measured on the host, from spawning qemu to the result, the same way for
// our worker and for a busybox baseline on the same kernel and QEMU flags.

// BootVariant is one way to boot in the cold-start comparison.
type BootVariant struct {
	Name   string
	Kernel string // bzImage, or vmlinux (PVH) booted as is
	Initrd string
	// Baseline: a baseline initramfs (BusyboxInitramfs, GoInitramfs),
	// whose /init only connects and says hello; otherwise our worker, which
	// runs cascading_sha256.
	Baseline bool
	// Cmdline is added to the kernel command line (a parameter on trial).
	Cmdline string
	// Snapshot: restore a saved VM (power.BootSnapshot) from SnapshotDir;
	// the first boot of a variant saves it. A restore prints no /init
	// marker (its /init ran before the save): its guest "init" uptime is
	// the uptime at the restore.
	Snapshot    bool
	SnapshotDir string
}

// BootSample is one boot's milestones: host wall time in ms since qemu was
// spawned, and the guest's own uptime where it reports it.
type BootSample struct {
	FirstByteMS float64 // first byte on the serial console
	InitMS      float64 // /init printed protocol.InitMarker
	ConnectedMS float64 // the host accepted the worker's connection
	ResultMS    float64 // the result arrived
	// Guest uptime (kernel clock) at /init and at connect.
	GuestInitMS      float64
	GuestConnectedMS float64
	// CPUMS is the CPU time (user+system) qemu used from spawn to exit:
	// the work of the boot, which unlike wall time does not grow while the
	// VM waits for a busy host's CPU.
	CPUMS float64
}

// ErrBootMarker means a boot connected without printing the /init marker
// on its console: the images are not the ones this benchmark expects.
var ErrBootMarker = errors.New("no /init marker on the console")

// consoleTimer receives a worker's console and notes when its first byte
// and the /init marker arrive.
type consoleTimer struct {
	now func() time.Time

	mu        sync.Mutex
	spawn     time.Time
	first     time.Time
	init      time.Time
	guestInit float64
	tail      []byte // recent output, to find the marker across writes
}

// start is the power controller's Console hook: called just before qemu
// starts.
func (c *consoleTimer) start(string) io.Writer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.spawn = c.now()
	return c
}

func (c *consoleTimer) Write(p []byte) (int, error) {
	t := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first.IsZero() && len(p) > 0 {
		c.first = t
	}
	if c.init.IsZero() {
		c.tail = append(c.tail, p...)
		if i := strings.Index(string(c.tail), protocol.InitMarker+" "); i >= 0 {
			rest := string(c.tail[i+len(protocol.InitMarker)+1:])
			if line, _, ok := strings.Cut(rest, "\n"); ok {
				c.init = t
				c.guestInit = parseUptime(line)
			}
		} else if len(c.tail) > 4096 {
			c.tail = c.tail[len(c.tail)-256:]
		}
	}
	return len(p), nil
}

// childrenCPUMS is the CPU time of this process's reaped children, in ms.
func childrenCPUMS() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
}

// parseUptime reads "uptime_ms=N" from a marker line (0 if absent).
func parseUptime(line string) float64 {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "uptime_ms="); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n
		}
	}
	return 0
}

// since is t - spawn in ms (0 if t is unset).
func (c *consoleTimer) since(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.Sub(c.spawn).Microseconds()) / 1000
}

// BootOnce boots variant v once in QEMU (accelerator accel) and measures it.
// Our worker runs the smoke job through the real orchestrator; the baseline
// connects to a listener that answers at once. Either way it returns once
// the VM has exited, so boots never overlap.
func BootOnce(ctx context.Context, v BootVariant, accel string, log *slog.Logger) (BootSample, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cl := cluster.Local(1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return BootSample{}, err
	}
	defer ln.Close()
	cl.Network.Port = ln.Addr().(*net.TCPAddr).Port
	logDir, err := os.MkdirTemp("", "mfbuild-coldstart-")
	if err != nil {
		return BootSample{}, err
	}
	defer os.RemoveAll(logDir)
	ct := &consoleTimer{now: time.Now}
	cpu0 := childrenCPUMS()
	boot := power.BootFull
	if v.Snapshot {
		boot = power.BootSnapshot
	}
	q, err := power.NewQEMU(ctx, power.QEMUConfig{Arch: target.X86, Kernel: v.Kernel, Initrd: v.Initrd, Boot: boot,
		Accel: accel, Cluster: cl, LogDir: logDir, Failsafe: 30, Log: log, Console: ct.start,
		Cmdline: v.Cmdline, SnapshotDir: v.SnapshotDir})
	if err != nil {
		return BootSample{}, err
	}
	defer q.Close()
	var s BootSample
	if v.Baseline {
		s, err = bootBaseline(ctx, q, cl, ln, ct)
	} else {
		s, err = bootWorker(ctx, q, cl, ln, ct, log)
	}
	if err != nil {
		b, _ := os.ReadFile(q.LogPath("vm0"))
		return s, fmt.Errorf("%s: %w\n--- console ---\n%s", v.Name, err, b)
	}
	// The orchestrator owns q's exit handler: poll, as Smoke does.
	for deadline := time.Now().Add(20 * time.Second); q.Running("vm0"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return s, fmt.Errorf("%s: the VM did not exit after its result", v.Name)
		}
	}
	s.CPUMS = childrenCPUMS() - cpu0 // qemu has been reaped: it counts now
	ct.mu.Lock()
	defer ct.mu.Unlock()
	s.FirstByteMS, s.InitMS = ct.since(ct.first), ct.since(ct.init)
	if v.Snapshot {
		return s, nil
	}
	s.GuestInitMS = ct.guestInit
	if s.InitMS == 0 {
		return s, fmt.Errorf("%s: %w", v.Name, ErrBootMarker)
	}
	return s, nil
}

func bootWorker(ctx context.Context, q *power.QEMU, cl *cluster.Cluster, ln net.Listener, ct *consoleTimer, log *slog.Logger) (BootSample, error) {
	o, err := orchestrator.New(orchestrator.Config{Cluster: cl,
		Controllers: map[string]power.Controller{cluster.KindVM: q}, Log: log,
		PowerUpTimeout: 60 * time.Second, MaxAttempts: 1})
	if err != nil {
		return BootSample{}, err
	}
	defer o.Close()
	go o.Serve(ln)
	args, _ := json.Marshal(map[string]any{"data": SmokeData, "rounds": SmokeRounds})
	inv, err := o.Invoke(ctx, "cascading_sha256", args, 30*time.Second)
	if err != nil {
		return BootSample{}, err
	}
	if inv.Err != nil {
		return BootSample{}, inv.Err
	}
	var digest string
	if err := json.Unmarshal(inv.Result, &digest); err != nil || digest != ExpectedSmokeDigest() {
		return BootSample{}, fmt.Errorf("wrong smoke result %s", inv.Result)
	}
	ct.mu.Lock()
	defer ct.mu.Unlock()
	// GuestInitMS: a restore reports its uptime at the restore instead
	// (BootOnce takes the console's /init marker for full boots).
	return BootSample{ConnectedMS: ct.since(inv.Connected), ResultMS: ct.since(inv.Finished),
		GuestInitMS: inv.Boot.RestoredMS, GuestConnectedMS: inv.Boot.ConnectedMS}, nil
}

// bootBaseline powers the busybox worker on and waits for its one line
// ("hello UPTIME_SECONDS"); connected is the accept, result the line.
func bootBaseline(ctx context.Context, q *power.QEMU, cl *cluster.Cluster, ln net.Listener, ct *consoleTimer) (BootSample, error) {
	if err := q.PowerOn(ctx, cl.Workers[0]); err != nil {
		return BootSample{}, err
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(60 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		return BootSample{}, fmt.Errorf("the baseline never connected: %w", err)
	}
	accepted := time.Now()
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return BootSample{}, fmt.Errorf("baseline hello: %w", err)
	}
	got := time.Now()
	c.Write([]byte("ok\n"))
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != "hello" {
		return BootSample{}, fmt.Errorf("baseline hello: got %q", line)
	}
	up, err := strconv.ParseFloat(f[1], 64)
	if err != nil {
		return BootSample{}, fmt.Errorf("baseline hello: %q: %w", line, err)
	}
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return BootSample{ConnectedMS: ct.since(accepted), ResultMS: ct.since(got), GuestConnectedMS: up * 1000}, nil
}

// baselineInit is the busybox baseline's /init: mount /proc, print the
// /init marker, connect to mf.orch from the kernel command line (the
// network is up already: the kernel's ip=), say hello, reset.
const baselineInit = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
read up idle </proc/uptime
echo "` + protocol.InitMarker + ` uptime_ms=${up%.*}${up#*.}0"
for p in $(/bin/busybox cat /proc/cmdline); do
	case $p in ` + bootparams.Orch + `=*) orch=${p#*=} ;; esac
done
read up idle </proc/uptime
echo "hello $up" | /bin/busybox nc ${orch%:*} ${orch#*:}
/bin/busybox reboot -f
`

// BusyboxInitramfs writes the baseline worker's initramfs to out: Debian's
// static busybox (builder.BusyboxPath) and a shell /init that only connects.
func BusyboxInitramfs(out string) (builder.InitramfsInfo, error) {
	a, err := initramfs.New(
		initramfs.WithBytes("init", []byte(baselineInit), 0o755),
		initramfs.WithFile("bin/busybox", builder.BusyboxPath, 0o755))
	if err != nil {
		return builder.InitramfsInfo{}, fmt.Errorf("baseline initramfs (install busybox-static: make deps): %w", err)
	}
	return writeArchive(a, out)
}

// GoInitramfs writes the second baseline's initramfs to out: the least a
// Go /init does to be a worker (e2e/testdata/goinit: mount /proc, print the
// marker, connect, say hello), built static for x86-64 from the module in
// repoDir. Against it, the Go runtime's own cost is told apart from what
// mfinit adds.
func GoInitramfs(ctx context.Context, repoDir, out string) (builder.InitramfsInfo, error) {
	bin := out + ".init"
	defer os.Remove(bin)
	if err := initramfs.GoBuild(ctx, repoDir, "./e2e/testdata/goinit", target.X86, bin); err != nil {
		return builder.InitramfsInfo{}, fmt.Errorf("go baseline: %w", err)
	}
	a, err := initramfs.New(initramfs.WithFile("init", bin, 0o755))
	if err != nil {
		return builder.InitramfsInfo{}, fmt.Errorf("go baseline initramfs: %w", err)
	}
	return writeArchive(a, out)
}

// writeArchive writes a baseline's archive to the file out.
func writeArchive(a *initramfs.Archive, out string) (builder.InitramfsInfo, error) {
	f, err := os.Create(out)
	if err != nil {
		return builder.InitramfsInfo{}, err
	}
	n, err := a.WriteTo(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return builder.InitramfsInfo{Path: out, Size: n, Entries: len(a.Names())}, err
}

// Spread summarises samples: median, quartiles and range.
type Spread struct {
	N                int
	Median, P25, P75 float64
	Min, Max         float64
}

// Summarize returns the spread of xs (zero for none). Quartiles
// interpolate linearly between order statistics.
func Summarize(xs []float64) Spread {
	if len(xs) == 0 {
		return Spread{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	q := func(p float64) float64 {
		pos := p * float64(len(s)-1)
		i := int(pos)
		if i+1 >= len(s) {
			return s[len(s)-1]
		}
		return s[i] + (pos-float64(i))*(s[i+1]-s[i])
	}
	return Spread{N: len(s), Median: q(0.5), P25: q(0.25), P75: q(0.75), Min: s[0], Max: s[len(s)-1]}
}

// String is "median (p25-p75, min-max)", in whole units.
func (s Spread) String() string {
	return fmt.Sprintf("%4.0f (%.0f-%.0f, %.0f-%.0f)", s.Median, s.P25, s.P75, s.Min, s.Max)
}
