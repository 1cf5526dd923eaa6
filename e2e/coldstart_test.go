package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/target"
)

func TestSummarize(t *testing.T) {
	tests := []struct {
		in   []float64
		want Spread
	}{
		{nil, Spread{}},
		{[]float64{5}, Spread{N: 1, Median: 5, P25: 5, P75: 5, Min: 5, Max: 5}},
		{[]float64{4, 1, 3, 2}, Spread{N: 4, Median: 2.5, P25: 1.75, P75: 3.25, Min: 1, Max: 4}},
		{[]float64{9, 1, 5, 3, 7}, Spread{N: 5, Median: 5, P25: 3, P75: 7, Min: 1, Max: 9}},
	}
	for _, tt := range tests {
		if got := Summarize(tt.in); got != tt.want {
			t.Errorf("Summarize(%v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

// TestConsoleTimer: the first byte and the marker are timed when they
// arrive, even when the marker line is split across writes.
func TestConsoleTimer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	now := t0
	ct := &consoleTimer{now: func() time.Time { return now }}
	ct.start("vm0")
	steps := []struct {
		at    time.Duration
		write string
	}{
		{250 * time.Millisecond, "Unable to read current time from RTC\r\n"},
		{900 * time.Millisecond, protocol.InitMarker + " upti"},
		{950 * time.Millisecond, "me_ms=812\r\nmore output\r\n"},
		{990 * time.Millisecond, protocol.InitMarker + " uptime_ms=1\r\n"},
	}
	for _, s := range steps {
		now = t0.Add(s.at)
		ct.Write([]byte(s.write))
	}
	if got := ct.since(ct.first); got != 250 {
		t.Errorf("first byte at %v ms, want 250", got)
	}
	if got := ct.since(ct.init); got != 950 {
		t.Errorf("marker at %v ms, want 950 (when its line was complete)", got)
	}
	if ct.guestInit != 812 {
		t.Errorf("guest uptime %v, want 812", ct.guestInit)
	}
}

// TestBusyboxInitramfs: the baseline carries busybox and a /init that
// prints the marker and connects to mf.orch.
func TestBusyboxInitramfs(t *testing.T) {
	if _, err := os.Stat(builder.BusyboxPath); err != nil {
		t.Skip("no busybox-static (make deps)")
	}
	info, err := BusyboxInitramfs(filepath.Join(t.TempDir(), "bb.cpio"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Size < 1<<20 || info.Entries < 3 {
		t.Errorf("baseline initramfs: %+v", info)
	}
	for _, want := range []string{protocol.InitMarker, bootparams.Orch + "=", "nc "} {
		if !strings.Contains(baselineInit, want) {
			t.Errorf("baseline /init lacks %q", want)
		}
	}
}

// coldStartVariants builds our worker (kernel from the cache) and the
// busybox baseline, and lays out each kernel so the power controller boots
// exactly it: the bzImage alone in a folder (no vmlinux beside it), the
// vmlinux by name.
// With full, also the smaller workers (compute only, gzip).
func coldStartVariants(tb testing.TB, full bool) []BootVariant {
	r, err := builder.FindRepo(".")
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	o := builder.Options{RepoDir: r, Arch: target.X86, Cache: cache.Cache{Dir: cache.DefaultDir()}}
	w, err := builder.BuildWorker(context.Background(), o, filepath.Join(dir, "worker"))
	if err != nil {
		tb.Fatal(err)
	}
	if w.VMLinux == "" {
		tb.Fatal("the x86 kernel build has no vmlinux output")
	}
	bz := filepath.Join(dir, "bz", "bzImage")
	os.MkdirAll(filepath.Dir(bz), 0o755)
	if err := cache.CopyFile(bz, w.Kernel, 0o644); err != nil {
		tb.Fatal(err)
	}
	bb, err := BusyboxInitramfs(filepath.Join(dir, "busybox.cpio"))
	if err != nil {
		tb.Fatal(err)
	}
	vs := []BootVariant{
		{Name: "worker bzImage", Kernel: bz, Initrd: w.Initramfs},
		{Name: "worker vmlinux", Kernel: w.VMLinux, Initrd: w.Initramfs},
		{Name: "busybox bzImage", Kernel: bz, Initrd: bb.Path, Baseline: true},
		{Name: "busybox vmlinux", Kernel: w.VMLinux, Initrd: bb.Path, Baseline: true},
	}
	if !full {
		return append(vs, goBaseline(tb, r, dir, w))
	}
	// The controller turns legacy PTYs off (pty.legacy_count=0): this
	// variant turns them back on, to keep measuring what that buys.
	vs = append(vs, BootVariant{Name: "vmlinux pty=256", Kernel: w.VMLinux, Initrd: w.Initramfs, Cmdline: "pty.legacy_count=256"})
	// Smaller workers (--functions, --compress), booted from the vmlinux.
	for _, c := range []struct{ name, builtins, compress string }{
		{"compute vmlinux", "compute", ""},
		{"compute gz vml", "compute", builder.CompressGzip},
		{"all gz vmlinux", "all", builder.CompressGzip},
	} {
		o.Builtins, o.Compress = c.builtins, c.compress
		info, err := builder.Initramfs(context.Background(), o, filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".cpio"))
		if err != nil {
			tb.Fatal(err)
		}
		vs = append(vs, BootVariant{Name: c.name, Kernel: w.VMLinux, Initrd: info.Path})
	}
	// The default worker restored from a snapshot (--boot snapshot).
	vs = append(vs, BootVariant{Name: "worker snapshot", Kernel: w.VMLinux, Initrd: w.Initramfs,
		Snapshot: true, SnapshotDir: filepath.Join(dir, "snapshots")})
	// The same worker on a kernel from x86_64_defconfig plus our fragments
	// (the original's method): the first run builds it (cached after).
	o.Builtins, o.Compress, o.KernelBase = "", "", "x86_64_defconfig"
	k, err := builder.Kernel(context.Background(), o)
	if err != nil {
		tb.Fatal(err)
	}
	vs = append(vs, BootVariant{Name: "defconfig vml", Kernel: k.Output("vmlinux"), Initrd: w.Initramfs})
	return append(vs, goBaseline(tb, r, dir, w))
}

// goBaseline is the second baseline: a minimal Go /init (the Go runtime's
// floor), booted from the worker's vmlinux.
func goBaseline(tb testing.TB, repoDir, dir string, w builder.BootFiles) BootVariant {
	gi, err := GoInitramfs(context.Background(), repoDir, filepath.Join(dir, "goinit.cpio"))
	if err != nil {
		tb.Fatal(err)
	}
	return BootVariant{Name: "go-minimal vml", Kernel: w.VMLinux, Initrd: gi.Path, Baseline: true}
}

// TestColdStartBoots boots each cold-start variant once: the benchmark's
// machinery measures real milestones in order.
func TestColdStartBoots(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	vs := coldStartVariants(t, false)
	// Resolve the accelerator once: a KVM probe inside a boot would count
	// in its qemu CPU time.
	accel := power.ProbeAccel(context.Background(), target.X86, vs[0].Kernel, vs[0].Initrd, slog.Default())
	for _, v := range vs {
		s, err := BootOnce(context.Background(), v, accel, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%-16s %+v", v.Name, s)
		if !(0 < s.FirstByteMS && s.FirstByteMS <= s.InitMS && s.InitMS <= s.ConnectedMS && s.ConnectedMS <= s.ResultMS) {
			t.Errorf("%s: milestones out of order: %+v", v.Name, s)
		}
		if s.CPUMS <= 0 {
			t.Errorf("%s: no qemu CPU time measured", v.Name)
		}
		if s.GuestInitMS <= 0 || s.GuestConnectedMS < s.GuestInitMS {
			t.Errorf("%s: guest uptimes %+v", v.Name, s)
		}
	}
}

// BenchmarkColdStart boots our worker and the busybox baseline, each from
// the bzImage and from the vmlinux (PVH), interleaved round by round (b.N
// rounds; make bench runs 10), and prints medians with spread and ratios.
func BenchmarkColdStart(b *testing.B) {
	if _, err := os.Stat(builder.BusyboxPath); err != nil {
		b.Skip("no busybox-static (make deps)")
	}
	vs := coldStartVariants(b, true)
	ctx := context.Background()
	accel := power.ProbeAccel(ctx, target.X86, vs[0].Kernel, vs[0].Initrd, slog.Default())
	samples := make([][]BootSample, len(vs))
	// Save the snapshots first: the rounds measure restores.
	for _, v := range vs {
		if v.Snapshot {
			if _, err := BootOnce(ctx, v, accel, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range vs {
			k := (i + j) % len(vs) // rotate who goes first
			s, err := BootOnce(ctx, vs[k], accel, nil)
			if err != nil {
				b.Fatal(err)
			}
			samples[k] = append(samples[k], s)
		}
	}
	b.StopTimer()
	load, _ := os.ReadFile("/proc/loadavg")
	var t strings.Builder
	fmt.Fprintf(&t, "\ncold start, %d boots each, interleaved; accel %s; load %s", b.N, accel, load)
	fmt.Fprintf(&t, "host ms since spawn, median (p25-p75, min-max); guest = kernel uptime\n")
	fmt.Fprintf(&t, "%-16s %-24s %-24s %-24s %-24s %-24s %-6s %s\n", "variant", "first serial byte", "/init", "connected", "result", "qemu CPU ms", "g-init", "g-conn")
	med := make([]Spread, len(vs))
	cpu := make([]Spread, len(vs))
	gconn := make([]float64, len(vs))
	for k, v := range vs {
		col := func(f func(BootSample) float64) Spread {
			var xs []float64
			for _, s := range samples[k] {
				xs = append(xs, f(s))
			}
			return Summarize(xs)
		}
		first := col(func(s BootSample) float64 { return s.FirstByteMS })
		init := col(func(s BootSample) float64 { return s.InitMS })
		med[k] = col(func(s BootSample) float64 { return s.ConnectedMS })
		res := col(func(s BootSample) float64 { return s.ResultMS })
		gi := col(func(s BootSample) float64 { return s.GuestInitMS })
		gc := col(func(s BootSample) float64 { return s.GuestConnectedMS })
		gconn[k] = gc.Median
		cpu[k] = col(func(s BootSample) float64 { return s.CPUMS })
		fmt.Fprintf(&t, "%-16s %-24s %-24s %-24s %-24s %-24s %-6.0f %.0f\n", v.Name, first, init, med[k], res, cpu[k], gi.Median, gc.Median)
		unit := strings.ReplaceAll(v.Name, " ", "-")
		b.ReportMetric(first.Median, unit+"-first-byte-ms")
		b.ReportMetric(med[k].Median, unit+"-connected-ms")
		b.ReportMetric(cpu[k].Median, unit+"-qemu-cpu-ms")
	}
	ratio := func(a, c int) {
		fmt.Fprintf(&t, "%-16s / %-16s connected (wall) %.2f, qemu CPU %.2f, guest uptime at connect %.2f\n", vs[a].Name, vs[c].Name,
			med[a].Median/med[c].Median, cpu[a].Median/cpu[c].Median, gconn[a]/gconn[c])
	}
	ratio(1, 0)  // vmlinux vs bzImage, our worker
	ratio(3, 2)  // the same for the baseline
	ratio(0, 2)  // our worker vs busybox, bzImage
	ratio(1, 3)  // our worker vs busybox, vmlinux
	ratio(1, 4)  // without legacy PTYs (the default) vs with
	ratio(5, 3)  // the compute-only worker vs busybox
	ratio(5, 1)  // compute-only vs every client
	ratio(6, 5)  // gzip vs not, compute-only
	ratio(7, 1)  // gzip vs not, every client
	ratio(8, 1)  // restored from a snapshot vs booted, same worker
	ratio(8, 3)  // restored vs the busybox baseline's boot
	ratio(1, 9)  // our tinyconfig-based kernel vs the defconfig-based one, same worker
	ratio(10, 3) // a minimal Go /init vs the busybox shell: the Go runtime's own cost
	ratio(5, 10) // the compute-only worker vs the minimal Go /init: what mfinit adds
	ratio(1, 10) // the default worker vs the minimal Go /init
	fmt.Fprintf(&t, "(%s: qemu spawned to connected; its g-init is the guest's uptime at the restore)\n", vs[8].Name)
	// Printed, not logged: the testing package cuts long benchmark logs.
	fmt.Print(t.String())
}
