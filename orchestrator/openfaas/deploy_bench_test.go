package openfaas

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/openfaas/faas-provider/types"

	"github.com/microfaas/microfaas/builder"
	"github.com/microfaas/microfaas/bundle/oci"
	"github.com/microfaas/microfaas/e2e/qemutest"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/testfn"
	"github.com/microfaas/microfaas/orchestrator/deploy"
	mftarget "github.com/microfaas/microfaas/target"
)

// deployRounds is BenchmarkDeployedColdCalls's rounds: one cold call of
// each kind per round (the closing table needs at least 10).
var deployRounds = flag.Int("deploy-rounds", 10, "BenchmarkDeployedColdCalls: rounds (a cold call of each kind per round)")

// bigcountPkg is the ~5 MB static Go function (testdata/bigcount).
const bigcountPkg = "./orchestrator/openfaas/testdata/bigcount"

// buildBigcount compiles testdata/bigcount for x86 as qemutest.Worker
// compiles a baked-in function (same flags, so the same bytes).
func buildBigcount(tb testing.TB) []byte {
	tb.Helper()
	repo, err := builder.FindRepo(".")
	if err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(tb.TempDir(), "bigcount")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, bigcountPkg)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build bigcount: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// loadavg is the host's 1, 5 and 15 minute load averages.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// percentile is the p-th percentile (0..100) of ds, interpolated between
// the closest ranks.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	r := p / 100 * float64(len(s)-1)
	lo, hi := int(math.Floor(r)), int(math.Ceil(r))
	return s[lo] + time.Duration(math.Round(float64(s[hi]-s[lo])*(r-float64(lo))))
}

// series is one kind of measurement of BenchmarkDeployedColdCalls.
type series struct {
	name string
	ds   []time.Duration // wall times
	cpu  []time.Duration // for cold calls: the CPU time QEMU used for each
}

// add notes one cold call.
func (s *series) add(c call) {
	s.ds, s.cpu = append(s.ds, c.wall), append(s.cpu, c.cpu)
}

func (s *series) row() string {
	cpu := "-"
	if len(s.cpu) > 0 {
		cpu = fmt.Sprintf("%.0f (%.0f-%.0f)", ms(percentile(s.cpu, 50)), ms(percentile(s.cpu, 10)), ms(percentile(s.cpu, 90)))
	}
	return fmt.Sprintf("| %s | %d | %.0f | %.0f-%.0f | %s |", s.name, len(s.ds),
		ms(percentile(s.ds, 50)), ms(percentile(s.ds, 10)), ms(percentile(s.ds, 90)), cpu)
}

// call is one cold call: its wall time (request -> response) and the CPU
// time its QEMU process used from spawn to exit. Under TCG the guest
// advances only while QEMU runs, so the CPU time is the work of the boot
// and call, while the wall time also holds the waits for a CPU on a busy
// host.
type call struct{ wall, cpu time.Duration }

// childCPU is the user+system time of the test's exited, waited-for child
// processes (the QEMU workers).
func childCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// deployedFn is a function deployed at run time in a benchmark cluster.
type deployedFn struct {
	c         *qemuCluster
	store     *deploy.Store
	name, ref string
	body      string
	want      []byte
	arch      string
	// fresh: the bundle deleted first, so the deploy pulls, flattens and
	// writes it; stored: a redeploy of the same image, its bundle in the
	// store already. Deploy is the deploy alone, first the deploy and
	// the cold call after it, call the cold call alone.
	freshDeploy, freshFirst, storedDeploy, storedFirst, call series
	// prep is the worker's own time to check (hash) and unpack the
	// bundle, wait how long its job waited for that, from its console.
	prep, wait series
	bundleSize int64
	digest     string // the bundle deployed last
}

// deployed notes the bundle d's deployment now uses.
func (d *deployedFn) deployed() {
	if rec, ok := d.store.Get(d.name); ok {
		d.bundleSize, d.digest = rec.Archs[d.arch].Bundle.Size, rec.Archs[d.arch].Bundle.Digest
	}
}

// coldCall calls fn with every worker off and checks it was a cold call
// (one power-on) with the expected answer.
func coldCall(b *testing.B, c *qemuCluster, fn, body string, want []byte) call {
	b.Helper()
	c.waitAllOff(60 * time.Second)
	before, _ := c.ctrl.counts()
	cpu0 := childCPU()
	t0 := time.Now()
	res, got := c.call("POST", "/function/"+fn, body)
	took := time.Since(t0)
	if res.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
		b.Fatalf("%s: %d %q, want 200 %q", fn, res.StatusCode, got, want)
	}
	after, _ := c.ctrl.counts()
	n := 0
	for id := range after {
		n += after[id] - before[id]
	}
	if n != 1 {
		b.Fatalf("%s: %d power-ons, want 1 (a cold call)", fn, n)
	}
	// The worker powers off after its one job; its QEMU has exited and
	// been waited for when the orchestrator sees it off.
	c.waitAllOff(60 * time.Second)
	return call{took, childCPU() - cpu0}
}

// The worker's log lines (runtime/bundles.go) on a bundle it checked
// (and unpacked, unless its kernel did: unpack_ms=0), and on how long its
// first job waited for that check (the part the boot's waits did not hide).
var (
	prepLine = regexp.MustCompile(`bundle checked and unpacked.* ms=([0-9.]+)`)
	waitLine = regexp.MustCompile(`job waited for the delivered bundles' check.* ms=([0-9.]+)`)
)

// consoleMS is the ms= value of the first line re matches in the console
// of c's one worker (QEMU rewrites it each boot, so: its last boot);
// false when there is none.
func (c *qemuCluster) consoleMS(re *regexp.Regexp) (time.Duration, bool) {
	for _, console := range c.logs {
		if m := re.FindStringSubmatch(console()); m != nil {
			v, err := strconv.ParseFloat(m[1], 64)
			return time.Duration(v * float64(time.Millisecond)), err == nil
		}
	}
	return 0, false
}

// round deletes fn (its bundle is collected), deploys it again (fresh)
// and calls it cold, then redeploys the same image (the bundle stored
// already) and calls it cold again.
func (d *deployedFn) round(b *testing.B) {
	b.Helper()
	d.c.waitAllOff(60 * time.Second)
	if res, body := d.c.call("DELETE", "/system/functions", types.DeleteFunctionRequest{FunctionName: d.name}); res.StatusCode != http.StatusAccepted {
		b.Fatalf("delete %s: %d %s", d.name, res.StatusCode, body)
	}
	if _, ok := d.store.Get(d.name); ok {
		b.Fatalf("%s still deployed after its delete", d.name)
	}
	if _, err := os.Stat(filepath.Join(d.store.Dir(), "sha256-"+strings.TrimPrefix(d.digest, "sha256:"))); !errors.Is(err, os.ErrNotExist) {
		b.Fatalf("the bundle of %s is still stored after its delete (%v): the next deploy would not be fresh", d.name, err)
	}
	for _, fresh := range []bool{true, false} {
		method, dep, first := "POST", &d.freshDeploy, &d.freshFirst
		if !fresh {
			method, dep, first = "PUT", &d.storedDeploy, &d.storedFirst
		}
		t0 := time.Now()
		if res, body := d.c.call(method, "/system/functions", types.FunctionDeployment{Service: d.name, Image: d.ref}); res.StatusCode != http.StatusAccepted {
			b.Fatalf("%s %s: %d %s", method, d.name, res.StatusCode, body)
		}
		deployed := time.Since(t0)
		c := coldCall(b, d.c, d.name, d.body, d.want)
		dep.ds = append(dep.ds, deployed)
		first.ds = append(first.ds, deployed+c.wall)
		d.call.add(c)
		if p, ok := d.c.consoleMS(prepLine); ok {
			d.prep.ds = append(d.prep.ds, p)
		}
		if w, ok := d.c.consoleMS(waitLine); ok {
			d.wait.ds = append(d.wait.ds, w)
		}
		d.deployed()
	}
}

// BenchmarkDeployedColdCalls is issue 17's closing table: cold calls
// (every worker off before each call: power-on -> result through the
// provider) of functions baked into the worker image and deployed at run
// time, side by side in one run, interleaved round by round (the order
// rotating each round), each function's baked and deployed calls on the
// same worker image (x86 or ARM QEMU):
//
//   - bigcount (testdata/bigcount, a ~5 MB static Go function) baked in
//     (mfbuild --function) vs deployed at run time from an OCI image;
//   - internal/testfn's Python image (Debian's python3 and its libraries)
//     baked in (mfbuild --function python=oci:DIR) vs deployed;
//   - deploy -> first result for each deployed image: after a delete (the
//     bundle pulled, flattened and written) and on a redeploy of the same
//     image (its bundle in the store already);
//   - the ARM worker (TCG): testfn's upper baked in vs its linux/arm/v7
//     image deployed.
//
// It logs medians with p10/p90, the load average at start and end, and
// the bundle sizes. -deploy-rounds rounds (default 10: 10 cold calls of
// each kind):
//
//	flock /tmp/mf/qemu.lock go test -run '^$' -bench DeployedColdCalls -benchtime 1x -timeout 60m ./orchestrator/openfaas/
func BenchmarkDeployedColdCalls(b *testing.B) {
	rounds := *deployRounds
	const body = "one two three\nfour\n"
	x86w := qemutest.Worker(b, map[string]string{"bigcount": bigcountPkg})
	// The ARM figure needs the ARM toolchain and kernel tree; the x86
	// rows do not.
	var armw builder.BootFiles
	if why := armMissing(); why != "" {
		b.Logf("no ARM rows: %s", why)
	} else {
		armw = armWorker(b)
	}
	bin := buildBigcount(b)
	host := testfn.Registry(b)
	bigRef := host + "/bigcount:1"
	testfn.Push(b, bigRef, testfn.BuildImage(b, testfn.AMD64, []testfn.File{{Path: "/usr/local/bin/bigcount", Data: bin}},
		v1.Config{Entrypoint: []string{"/usr/local/bin/bigcount"}, WorkingDir: "/"}))
	pyRef := host + "/python:1"
	pyImg := testfn.PythonImage(b)
	testfn.Push(b, pyRef, pyImg)
	pyw := imageWorker(b, "python", pyImg)
	upRef := host + "/upper:arm"
	testfn.Push(b, upRef, testfn.UpperImage(b, testfn.ARMv7))
	// The answer bigcount gives on the host (it is an x86 static binary).
	hostBin := filepath.Join(b.TempDir(), "bigcount")
	if err := os.WriteFile(hostBin, bin, 0o755); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(hostBin)
	cmd.Stdin = strings.NewReader(body)
	bigWant, err := cmd.Output()
	if err != nil {
		b.Fatalf("bigcount on the host: %v", err)
	}
	upWant := []byte(strings.ToUpper(body))
	pyWant := []byte(strings.ToUpper(body) + "\n") // print adds a newline

	newStore := func() *deploy.Store {
		s, err := deploy.New(deploy.Config{Dir: b.TempDir(), Resolver: &oci.Resolver{Insecure: []string{host}}})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	for i := 0; i < b.N; i++ {
		b.Logf("load average at start: %s (%d CPUs)", loadavg(), runtime.NumCPU())
		// One cluster per worker image, each with its own store: baked
		// and deployed calls of a function run on the same worker image.
		newCluster := func(x86 builder.BootFiles, arm builder.BootFiles) (*qemuCluster, *deploy.Store) {
			s := newStore()
			if arm.Kernel != "" {
				return newQEMUCluster(b, 0, x86, 1, arm, 0, Config{Deploys: s, Archs: []string{mftarget.ARMv7.Name}}), s
			}
			return newQEMUCluster(b, 1, x86, 0, arm, 0, Config{Deploys: s, Archs: []string{mftarget.X86.Name}}), s
		}
		bigC, bigS := newCluster(x86w, builder.BootFiles{})
		pyC, pyS := newCluster(pyw, builder.BootFiles{})
		pairs := []*pair{
			{baked: series{name: "bigcount baked in, cold call"}, c: bigC, fn: "big", image: "microfaas/fn:bigcount",
				d: &deployedFn{c: bigC, store: bigS, name: "bigd", ref: bigRef, body: body, want: bigWant, arch: mftarget.X86.Name}},
			{baked: series{name: "python baked in (mfbuild --function python=oci:...), cold call"}, c: pyC, fn: "pyb", image: "microfaas/fn:python",
				d: &deployedFn{c: pyC, store: pyS, name: "py", ref: pyRef, body: body, want: pyWant, arch: mftarget.X86.Name}},
		}
		if armw.Kernel != "" {
			armC, armS := newCluster(builder.BootFiles{}, armw)
			pairs = append(pairs, &pair{baked: series{name: "ARM upper baked in, cold call"}, c: armC, fn: "upper", image: "microfaas/fn:upper",
				d: &deployedFn{c: armC, store: armS, name: "upd", ref: upRef, body: body, want: upWant, arch: mftarget.ARMv7.Name}})
		}
		var steps []func()
		for _, p := range pairs {
			p.c.deploy(types.FunctionDeployment{Service: p.fn, Image: p.image})
			p.d.c.deploy(types.FunctionDeployment{Service: p.d.name, Image: p.d.ref})
			p.d.deployed()
			steps = append(steps, func() { p.baked.add(coldCall(b, p.c, p.fn, body, p.d.want)) }, func() { p.d.round(b) })
		}
		for r := 0; r < rounds; r++ {
			for k := range steps {
				// Every cluster off: no worker of the step before is
				// still shutting down while this one is measured.
				for _, p := range pairs {
					p.c.waitAllOff(60 * time.Second)
				}
				steps[(r+k)%len(steps)]()
			}
		}
		label := func(d *deployedFn, what string) string { return d.ref[strings.Index(d.ref, "/")+1:] + " " + what }
		rows := []string{"| measurement | n | median ms | p10-p90 ms | QEMU CPU ms, median (p10-p90) |", "|---|---|---|---|---|"}
		for _, p := range pairs {
			d := p.d
			// The two cold calls of each deployed round take the same
			// worker path (the bundle in the boot): both count.
			d.call.name = label(d, "deployed, cold call")
			d.prep.name = label(d, "worker: bundle check (console ms=)")
			d.wait.name = label(d, "worker: job waited for the check (console ms=)")
			d.freshDeploy.name = label(d, "deploy (pull, flatten, bundle)")
			d.freshFirst.name = label(d, "deploy -> first result, fresh store")
			d.storedDeploy.name = label(d, "redeploy (bundle stored)")
			d.storedFirst.name = label(d, "redeploy -> first result, bundle stored")
			rows = append(rows, p.baked.row(), d.call.row())
			for _, w := range []*series{&d.prep, &d.wait} {
				if len(w.ds) > 0 { // the log line of a runtime that writes it
					rows = append(rows, w.row())
				}
			}
			rows = append(rows, d.freshDeploy.row(), d.freshFirst.row(), d.storedDeploy.row(), d.storedFirst.row())
		}
		b.Logf("cold calls, %d rounds, QEMU TCG, idle timeout 0 (a power-on per call):\n%s", rounds, strings.Join(rows, "\n"))
		ratio := func(a, b []time.Duration) float64 { return ms(percentile(a, 50)) / ms(percentile(b, 50)) }
		for _, p := range pairs {
			b.Logf("%s deployed/baked, medians: %.2fx wall, %.2fx QEMU CPU", p.d.ref[strings.Index(p.d.ref, "/")+1:],
				ratio(p.d.call.ds, p.baked.ds), ratio(p.d.call.cpu, p.baked.cpu))
		}
		sizes := []string{fmt.Sprintf("bigcount binary %d", len(bin))}
		for _, p := range pairs {
			sizes = append(sizes, fmt.Sprintf("bundle of %s %d", p.d.ref[strings.Index(p.d.ref, "/")+1:], p.d.bundleSize))
		}
		b.Logf("sizes (bytes): %s; initramfs of the bigcount worker %d, of the python worker %d",
			strings.Join(sizes, ", "), fileSize(x86w.Initramfs), fileSize(pyw.Initramfs))
		b.ReportMetric(ms(percentile(pairs[0].baked.ds, 50)), "baked-ms")
		b.ReportMetric(ms(percentile(pairs[0].d.call.ds, 50)), "deployed-ms")
		b.ReportMetric(ms(percentile(pairs[1].d.call.ds, 50)), "python-ms")
		if len(pairs) > 2 {
			b.ReportMetric(ms(percentile(pairs[2].d.call.ds, 50)), "arm-deployed-ms")
		}
		b.Logf("load average at end: %s", loadavg())
	}
}

// pair is a function baked into a worker image (fn, deployed as image
// microfaas/fn:NAME) and the same function deployed at run time (d), on
// cluster c of that worker image.
type pair struct {
	baked     series
	c         *qemuCluster
	fn, image string
	d         *deployedFn
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// imageWorker builds the x86 worker with img baked in as function name,
// as mfbuild worker --function NAME=oci:DIR does (an OCI layout folder).
func imageWorker(tb testing.TB, name string, img v1.Image) builder.BootFiles {
	tb.Helper()
	repo, err := builder.FindRepo(".")
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	lp, err := layout.Write(filepath.Join(dir, "oci"), empty.Index)
	if err != nil {
		tb.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithPlatform(testfn.AMD64.Platform())); err != nil {
		tb.Fatal(err)
	}
	w, err := builder.BuildWorker(context.Background(), builder.Options{RepoDir: repo, Arch: mftarget.X86,
		Cache: cache.Cache{Dir: cache.DefaultDir()}, Functions: map[string]string{name: "oci:" + filepath.Join(dir, "oci")}}, filepath.Join(dir, "worker"))
	if err != nil {
		tb.Fatal(err)
	}
	return w
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var ds []time.Duration
		for _, x := range v {
			ds = append(ds, time.Duration(x)*time.Millisecond)
		}
		return ds
	}
	tests := []struct {
		ds   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 90, 7 * time.Millisecond},
		{ms(3, 1, 2), 50, 2 * time.Millisecond},
		{ms(4, 1, 3, 2), 50, 2500 * time.Microsecond},
		{ms(10, 20, 30, 40, 50, 60, 70, 80, 90, 100), 10, 19 * time.Millisecond},
		{ms(10, 20, 30, 40, 50, 60, 70, 80, 90, 100), 90, 91 * time.Millisecond},
		{ms(5, 1), 0, time.Millisecond},
		{ms(5, 1), 100, 5 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := percentile(tt.ds, tt.p); got != tt.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", tt.ds, tt.p, got, tt.want)
		}
	}
}
