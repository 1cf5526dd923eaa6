package runtime

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microfaas/microfaas/bundle"
	"github.com/microfaas/microfaas/protocol"
)

// goBuild compiles a test program, static.
func goBuild(t *testing.T, pkg string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "bin")
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testBundle is a bundle's bytes and its reference.
type testBundle struct {
	data []byte
	ref  protocol.BundleRef
}

// makeBundle encodes an image holding one executable at /bin/NAME as its
// entrypoint, as the orchestrator would deploy it.
func makeBundle(t *testing.T, name string, bin []byte, env ...string) testBundle {
	t.Helper()
	tree := &bundle.Tree{Files: map[string]bundle.Entry{
		"bin/" + name: {Type: tar.TypeReg, Mode: 0o755, Data: bin},
		"tmp":         {Type: tar.TypeDir, Mode: 0o1777},
	}}
	var b bytes.Buffer
	if err := bundle.Encode(&b, tree, bundle.Config{Entrypoint: []string{"/bin/" + name}, Env: env}); err != nil {
		t.Fatal(err)
	}
	d, err := bundle.Digest(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	return testBundle{b.Bytes(), protocol.BundleRef{Digest: d, Size: int64(b.Len())}}
}

// orchestrator is the orchestrator's side of one session with a real
// worker over loopback TCP: it sends jobs, serves the bundles the worker
// asks for (in chunks of chunk bytes, through tamper), and reads results.
type orchestrator struct {
	t        *testing.T
	pc       *protocol.Conn
	hello    protocol.Hello
	bundles  map[string][]byte
	chunk    int
	tamper   func(c *protocol.BundleChunk) // nil: none
	requests []protocol.BundleRequest      // of the last job
	done     chan Outcome
}

// startWorker runs w against a loopback orchestrator and returns its side.
func startWorker(t *testing.T, w *Worker, bundles ...testBundle) *orchestrator {
	t.Helper()
	secret := []byte("0123456789abcdef0123456789abcdef")
	key, err := protocol.WorkerKey(secret, "vm0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	w.Config = Config{ID: "vm0", Orch: ln.Addr().String(), Failsafe: 30 * time.Second}
	w.Key = key
	w.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	o := &orchestrator{t: t, bundles: map[string][]byte{}, chunk: protocol.BundleChunkSize, done: make(chan Outcome, 1)}
	for _, b := range bundles {
		o.bundles[b.ref.Digest] = b.data
	}
	go func() { o.done <- w.Run(context.Background()) }()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	o.pc, o.hello, err = protocol.ServerHandshake(c, c.RemoteAddr(), protocol.ClusterKeys(secret, map[string]string{"vm0": "127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// run sends job and serves the worker until its result.
func (o *orchestrator) run(job protocol.Job) protocol.Result {
	o.t.Helper()
	o.requests = nil
	if err := o.pc.Send(protocol.TypeJob, job); err != nil {
		o.t.Fatal(err)
	}
	for {
		typ, body, err := o.pc.Receive()
		if err != nil {
			o.t.Fatalf("job %s: %v", job.ID, err)
		}
		switch typ {
		case protocol.TypeResult:
			var res protocol.Result
			if err := json.Unmarshal(body, &res); err != nil {
				o.t.Fatal(err)
			}
			return res
		case protocol.TypeBundleRequest:
			var req protocol.BundleRequest
			if err := json.Unmarshal(body, &req); err != nil {
				o.t.Fatal(err)
			}
			o.requests = append(o.requests, req)
			data, ok := o.bundles[req.Digest]
			if !ok {
				o.pc.Send(protocol.TypeBundleChunk, protocol.BundleChunk{Digest: req.Digest, Offset: req.Offset, Error: "not deployed"})
				continue
			}
			// One chunk per request, as the orchestrator serves them.
			off := int(req.Offset)
			c := protocol.BundleChunk{Digest: req.Digest, Offset: int64(off), Data: bytes.Clone(data[off:min(off+o.chunk, len(data))])}
			if o.tamper != nil {
				o.tamper(&c)
			}
			if err := o.pc.Send(protocol.TypeBundleChunk, c); err != nil {
				o.t.Fatal(err)
			}
		default:
			o.t.Fatalf("job %s: unexpected %q", job.ID, typ)
		}
	}
}

// stop powers the worker off and returns its outcome.
func (o *orchestrator) stop() Outcome {
	o.pc.Send(protocol.TypeCommand, protocol.Command{Action: protocol.CmdPowerOff})
	return <-o.done
}

// ranListener is where the test function reports that it ran.
type ranListener struct{ ln *net.TCPListener }

func newRanListener(t *testing.T) *ranListener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &ranListener{ln.(*net.TCPListener)}
}

func (r *ranListener) addr() string { return r.ln.Addr().String() }

// ran takes the reports waiting, without waiting for more: the function
// connected (and was accepted by the kernel) before it exited, and so
// before the worker sent its result.
func (r *ranListener) ran(t *testing.T) int {
	rc, err := r.ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	rc.Control(func(fd uintptr) {
		for {
			nfd, _, err := unix.Accept4(int(fd), unix.SOCK_CLOEXEC)
			if err != nil {
				return
			}
			unix.Close(nfd)
			n++
		}
	})
	return n
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("image functions need root (the worker is PID 1 as root)")
	}
}

// TestBundleJobs: a worker runs functions deployed at run time, fetching
// each bundle over the session once and checking its digest first; a
// tampered chunk, a chunk the orchestrator cannot send and a bundle too
// large fail the job, and nothing of it runs. Each call's stderr comes back
// as its log.
func TestBundleJobs(t *testing.T) {
	needRoot(t)
	bin := goBuild(t, "./testdata/stdinfn")
	good := makeBundle(t, "fn", bin)
	other := makeBundle(t, "fn", bin, "VARIANT=1") // another digest
	missing := makeBundle(t, "fn", bin, "VARIANT=2")
	work := t.TempDir()
	w := &Worker{Bundles: &Bundles{WorkDir: work, MaxSize: 64 << 20}}
	o := startWorker(t, w, good, other)
	o.chunk = 300 << 10 // several chunks
	if len(o.hello.Bundles) != 0 {
		t.Errorf("hello lists bundles %v, the worker has none", o.hello.Bundles)
	}
	ran := newRanListener(t)
	env := map[string]string{"RAN_ADDR": ran.addr()}
	chunks := func(b testBundle) int { return (len(b.data) + o.chunk - 1) / o.chunk }
	flip := func(c *protocol.BundleChunk) {
		if c.Offset == int64(o.chunk) {
			c.Data[10] ^= 1
		}
	}
	huge := good.ref
	huge.Size = 65 << 20
	tests := []struct {
		name     string
		ref      protocol.BundleRef
		args     string
		tamper   func(c *protocol.BundleChunk)
		requests int
		ran      int
		result   string
		err      string
		log      string
	}{
		{"first call fetches", good.ref, `"hello"`, nil, chunks(good), 1, `"echo:hello"`, "", "stdinfn read 5 bytes"},
		{"second call has it", good.ref, `"again"`, nil, 0, 1, `"echo:again"`, "", "stdinfn read 5 bytes"},
		{"failure carries the log", good.ref, `"fail"`, nil, 0, 1, "", "asked to fail", "asked to fail"},
		{"tampered chunk", other.ref, `"x"`, flip, chunks(other), 0, "", "bundle digest mismatch", ""},
		{"after the tampered one, fetched again", other.ref, `"y"`, nil, chunks(other), 1, `"echo:y"`, "", "stdinfn read 1 bytes"},
		{"not deployed", missing.ref, `"z"`, nil, 1, 0, "", "could not send bundle", ""},
		{"too large to hold", huge, `"z"`, nil, 0, 0, "", "holds at most", ""},
		{"bad digest", protocol.BundleRef{Digest: "sha256:../../etc", Size: 10}, `"z"`, nil, 0, 0, "", "64 lowercase hex", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o.tamper = tt.tamper
			ref := tt.ref
			res := o.run(protocol.Job{ID: strconv.Itoa(i), Function: "fn", Bundle: &ref, Args: json.RawMessage(tt.args), Env: env, TimeoutMS: 30000})
			if len(o.requests) != tt.requests {
				t.Errorf("%d bundle requests, want %d", len(o.requests), tt.requests)
			}
			for i, r := range o.requests {
				if want := int64(i * o.chunk); r.Digest != ref.Digest || r.Offset != want {
					t.Errorf("request %+v, want %s from %d", r, ref.Digest, want)
				}
			}
			if got := ran.ran(t); got != tt.ran {
				t.Errorf("the function ran %d times, want %d", got, tt.ran)
			}
			if tt.err != "" {
				if !strings.Contains(res.Error, tt.err) {
					t.Fatalf("error %q, want %q in it", res.Error, tt.err)
				}
			} else if res.Error != "" || string(res.Result) != tt.result {
				t.Fatalf("result %s, error %q; want %s", res.Result, res.Error, tt.result)
			}
			if !strings.Contains(res.Log, tt.log) || tt.log == "" && res.Log != "" {
				t.Errorf("log %q, want %q", res.Log, tt.log)
			}
		})
	}
	if chunks(good) < 2 {
		t.Errorf("the bundle went in %d chunk: the test meant several", chunks(good))
	}
	// Only the last bundle stays unpacked; no fetch file is left.
	ents, _ := os.ReadDir(work)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{strings.TrimPrefix(other.ref.Digest, "sha256:")}; !slices.Equal(names, want) {
		t.Errorf("work directory holds %v, want %v", names, want)
	}
	if out := o.stop(); out.Action != protocol.CmdPowerOff {
		t.Errorf("outcome %+v", out)
	}
}

// TestBundleChunkOutOfStep: a chunk at the wrong offset is an orchestrator
// out of step: the worker ends the session rather than guess.
func TestBundleChunkOutOfStep(t *testing.T) {
	b := makeBundle(t, "fn", []byte("#!/bin/sh\necho hi\n"))
	w := &Worker{Bundles: &Bundles{WorkDir: t.TempDir()}}
	o := startWorker(t, w, b)
	if err := o.pc.Send(protocol.TypeJob, protocol.Job{ID: "1", Function: "fn", Bundle: &b.ref}); err != nil {
		t.Fatal(err)
	}
	var req protocol.BundleRequest
	if err := o.pc.Expect(protocol.TypeBundleRequest, &req); err != nil {
		t.Fatal(err)
	}
	o.pc.Send(protocol.TypeBundleChunk, protocol.BundleChunk{Digest: b.ref.Digest, Offset: 5, Data: b.data[5:]})
	out := <-o.done
	if out.Action != protocol.CmdPowerOff || !strings.Contains(out.Reason, "out of step") {
		t.Fatalf("outcome %+v, want a power-off for a chunk out of step", out)
	}
}

// TestWatchdogBundle: a watchdog image deployed at run time gets the
// caller's HTTP request and its response goes back unchanged; a warm
// worker keeps the watchdog for the same function's next call, and stops
// it before any other function runs.
func TestWatchdogBundle(t *testing.T) {
	needRoot(t)
	port := freePort(t)
	wdb := makeBundle(t, "fwatchdog", goBuild(t, "./functions/testdata/fwatchdog"), "port="+strconv.Itoa(port))
	fn := makeBundle(t, "fn", goBuild(t, "./testdata/stdinfn"))
	w := &Worker{Bundles: &Bundles{WorkDir: t.TempDir()}}
	o := startWorker(t, w, wdb, fn)
	binary := []byte{0, 0xff, 0xfe, '\n', 0x80}
	call := func(id string) protocol.Result {
		t.Helper()
		res := o.run(protocol.Job{ID: id, Function: "echo", Bundle: &wdb.ref, TimeoutMS: 30000,
			HTTP: &protocol.HTTPRequest{Method: "POST", Path: "/p", Query: "a=1", Header: map[string][]string{"X-In": {"v"}}, Body: binary}})
		if res.Error != "" || res.HTTP == nil {
			t.Fatalf("call %s: error %q, log %q", id, res.Error, res.Log)
		}
		if res.HTTP.Status != 418 || res.HTTP.Header["X-Out"][0] != "V" || len(res.HTTP.Body) != 256+len(binary) ||
			!bytes.Equal(res.HTTP.Body[256:], []byte{0x80, '\n', 0xfe, 0xff, 0}) {
			t.Fatalf("call %s: response %d %v %x", id, res.HTTP.Status, res.HTTP.Header, res.HTTP.Body)
		}
		if !strings.Contains(res.Log, "call POST /p query=a=1 x-in=v len=5") {
			t.Errorf("call %s: log %q", id, res.Log)
		}
		return res
	}
	listening := func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	first := call("1")
	second := call("2")
	if a, b := first.HTTP.Header["X-Instance"], second.HTTP.Header["X-Instance"]; !slices.Equal(a, b) {
		t.Errorf("the second call met a new watchdog (%v, then %v): the warm worker should keep it", a, b)
	}
	if strings.Contains(second.Log, "listening") {
		t.Errorf("the second call's log %q holds the first's start-up", second.Log)
	}
	if !listening() {
		t.Fatal("the watchdog is not kept between calls")
	}
	res := o.run(protocol.Job{ID: "3", Function: "fn", Bundle: &fn.ref, Args: json.RawMessage(`"x"`)})
	if res.Error != "" || string(res.Result) != `"echo:x"` {
		t.Fatalf("other function: %s %q", res.Result, res.Error)
	}
	if listening() {
		t.Fatal("the watchdog still runs after another function ran")
	}
	third := call("4")
	if a, b := second.HTTP.Header["X-Instance"], third.HTTP.Header["X-Instance"]; slices.Equal(a, b) {
		t.Errorf("after another function, the watchdog should be new: %v both times", a)
	}
	o.stop()
	if listening() {
		t.Fatal("the watchdog outlived the session")
	}
}

// deliver lays tb out in run as a worker's kernel unpacks it from the
// initramfs (orchestrator/power.BootInitrd): run/<hex>/{config.json,rootfs}
// (bundle.Unpack makes the same tree: bundle's TestWritePrefixedDigestTree)
// and returns that directory.
func deliver(t testing.TB, run string, tb testBundle) string {
	t.Helper()
	dir := filepath.Join(run, strings.TrimPrefix(tb.ref.Digest, "sha256:"))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := bundle.Unpack(bytes.NewReader(tb.data), dir, bundle.DefaultLimits); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestDeliveredAndCachedBundles: the hello lists a delivered bundle
// without waiting for its check, a job waits for it and runs the kernel's
// tree in place; a delivered tree that does not hash to its name is removed
// and fetched. A board's cache is hashed before the hello lists it and
// before it runs; a bad cache file is removed, then fetched again and
// cached right.
func TestDeliveredAndCachedBundles(t *testing.T) {
	a := makeBundle(t, "a", []byte("#!/bin/sh\necho a\n"))
	b := makeBundle(t, "b", []byte("#!/bin/sh\necho b\n"))
	c := makeBundle(t, "c", []byte("#!/bin/sh\necho c\n"))
	name := func(tb testBundle) string { return "sha256-" + strings.TrimPrefix(tb.ref.Digest, "sha256:") }
	run := t.TempDir()
	aDir := deliver(t, run, a)
	cDir := deliver(t, run, c)
	bDir := filepath.Join(run, strings.TrimPrefix(b.ref.Digest, "sha256:"))
	if err := os.Rename(cDir, bDir); err != nil { // b's name, c's tree
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(run, "notes"), []byte("x"), 0o400)
	os.Mkdir(filepath.Join(run, "other"), 0o700)
	delivered, err := TakeBundles(run)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{a.ref.Digest: aDir, b.ref.Digest: bDir}; !maps.Equal(delivered, want) {
		t.Fatalf("took %v, want %v", delivered, want)
	}
	cache := t.TempDir()
	os.WriteFile(filepath.Join(cache, name(c)), c.data, 0o600)
	os.WriteFile(filepath.Join(cache, name(b)), a.data, 0o600) // corrupt
	release := make(chan struct{})
	bs := &Bundles{Delivered: delivered, CacheDir: cache, WorkDir: t.TempDir(),
		digestTree: func(dir string, lim bundle.Limits) (string, bundle.Config, error) {
			<-release // the check takes its time
			return bundle.DigestTree(dir, lim)
		}}
	held := bs.Held() // returns while the delivered trees are being checked
	if want := []string{a.ref.Digest, b.ref.Digest, c.ref.Digest}; !slices.Equal(held, slices.Sorted(slices.Values(want))) {
		t.Errorf("held %v, want %v", held, want)
	}
	if _, err := os.Stat(filepath.Join(cache, name(b))); !os.IsNotExist(err) {
		t.Errorf("the corrupt cache file was kept: %v", err)
	}
	close(release)
	fetched := 0
	noFetch := func(ref protocol.BundleRef, w io.Writer) error {
		fetched++
		return fmt.Errorf("fetched %s", ref.Digest)
	}
	dir, cfg, err := bs.Prepare(a.ref, noFetch)
	if err != nil || dir != aDir || cfg.Entrypoint[0] != "/bin/a" || fetched != 0 {
		t.Fatalf("delivered a: %s %+v %v, fetched %d; want %s in place, not fetched", dir, cfg, err, fetched, aDir)
	}
	if _, _, err := bs.Prepare(b.ref, noFetch); err == nil || fetched != 1 {
		t.Errorf("b, delivered with c's tree: %v, fetched %d; want a fetch", err, fetched)
	}
	if _, err := os.Stat(bDir); !os.IsNotExist(err) {
		t.Errorf("the tree that did not match was kept: %v", err)
	}
	if held := bs.Held(); !slices.Contains(held, a.ref.Digest) || slices.Contains(held, b.ref.Digest) {
		t.Errorf("held %v once checked: want a and not b", held)
	}
	dir, _, err = bs.Prepare(c.ref, noFetch)
	if err != nil {
		t.Fatalf("c from the cache: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		t.Errorf("c not unpacked: %v", err)
	}
	if _, err := os.Stat(aDir); !os.IsNotExist(err) {
		t.Errorf("preparing another bundle kept the delivered tree: %v", err)
	}
	// The cache file changes under the worker: the next use hashes it,
	// refuses it and fetches.
	os.WriteFile(filepath.Join(cache, name(c)), a.data, 0o600)
	// Another bundle unpacked: c must come from the cache again.
	if _, _, err := bs.Prepare(a.ref, func(ref protocol.BundleRef, w io.Writer) error { _, err := w.Write(a.data); return err }); err != nil {
		t.Fatal(err)
	}
	fetched = 0
	_, _, err = bs.Prepare(c.ref, func(ref protocol.BundleRef, w io.Writer) error {
		fetched++
		_, err := w.Write(c.data)
		return err
	})
	if err != nil || fetched != 1 {
		t.Fatalf("prepare after the cache went bad: %v, fetched %d times", err, fetched)
	}
	if got, _ := os.ReadFile(filepath.Join(cache, name(c))); !bytes.Equal(got, c.data) {
		t.Error("the fetched bundle did not replace the bad cache file")
	}
	if _, _, err := bs.Prepare(protocol.BundleRef{Digest: b.ref.Digest, Size: b.ref.Size}, func(ref protocol.BundleRef, w io.Writer) error {
		_, err := w.Write(a.data[:b.ref.Size])
		return err
	}); !errors.Is(err, bundle.ErrDigestMismatch) {
		t.Errorf("b fetched with other bytes: %v, want ErrDigestMismatch", err)
	}
}

// TestDeliveredBundleTampered: a delivered tree changed in any way (one
// byte, an extra file, a mode, a symlink's target) is refused and removed:
// the job fetches the bundle, and if the orchestrator cannot send it the
// job fails and nothing runs.
func TestDeliveredBundleTampered(t *testing.T) {
	needRoot(t)
	bin := goBuild(t, "./testdata/stdinfn")
	tree := &bundle.Tree{Files: map[string]bundle.Entry{
		"bin/fn":  {Type: tar.TypeReg, Mode: 0o755, Data: bin},
		"bin/sh":  {Type: tar.TypeSymlink, Target: "fn"},
		"etc/cfg": {Type: tar.TypeReg, Mode: 0o644, Data: []byte("x=1\n")},
		"tmp":     {Type: tar.TypeDir, Mode: 0o1777},
	}}
	var buf bytes.Buffer
	if err := bundle.Encode(&buf, tree, bundle.Config{Entrypoint: []string{"/bin/fn"}}); err != nil {
		t.Fatal(err)
	}
	digest, _ := bundle.Digest(bytes.NewReader(buf.Bytes()))
	tb := testBundle{buf.Bytes(), protocol.BundleRef{Digest: digest, Size: int64(buf.Len())}}
	tests := []struct {
		name   string
		tamper func(dir string) error
	}{
		{"untouched", func(string) error { return nil }},
		{"one byte changed", func(dir string) error {
			p := filepath.Join(dir, "rootfs/bin/fn")
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[len(b)/2] ^= 0x40
			return os.WriteFile(p, b, 0)
		}},
		{"an extra file", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "rootfs/etc/extra"), nil, 0o644)
		}},
		{"a changed mode", func(dir string) error { return os.Chmod(filepath.Join(dir, "rootfs/etc/cfg"), 0o666) }},
		{"a symlink retargeted", func(dir string) error {
			p := filepath.Join(dir, "rootfs/bin/sh")
			os.Remove(p)
			return os.Symlink("../etc/cfg", p)
		}},
	}
	ran := newRanListener(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := t.TempDir()
			dir := deliver(t, run, tb)
			if err := tt.tamper(dir); err != nil {
				t.Fatal(err)
			}
			delivered, err := TakeBundles(run)
			if err != nil {
				t.Fatal(err)
			}
			w := &Worker{Bundles: &Bundles{Delivered: delivered, WorkDir: t.TempDir()}}
			w.Bundles.CheckDelivered()
			o := startWorker(t, w) // the orchestrator cannot send it
			if tt.name == "untouched" && !slices.Equal(o.hello.Bundles, []string{digest}) {
				t.Errorf("hello lists %v, want the delivered bundle", o.hello.Bundles)
			}
			res := o.run(protocol.Job{ID: strconv.Itoa(i), Function: "fn", Bundle: &tb.ref, Args: json.RawMessage(`"x"`),
				Env: map[string]string{"RAN_ADDR": ran.addr()}, TimeoutMS: 30000})
			n := ran.ran(t)
			if tt.name == "untouched" {
				if res.Error != "" || string(res.Result) != `"echo:x"` || n != 1 || len(o.requests) != 0 {
					t.Fatalf("result %s error %q, ran %d, %d requests; want it run from the delivered tree", res.Result, res.Error, n, len(o.requests))
				}
				o.stop()
				return
			}
			if n != 0 || res.Error == "" || len(o.requests) != 1 {
				t.Errorf("result %s error %q, ran %d times, %d requests; want a fetch, an error and nothing run", res.Result, res.Error, n, len(o.requests))
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("the tampered tree was kept: %v", err)
			}
			o.stop()
		})
	}
}

// freePort is a loopback port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// BenchmarkPrepareDelivered: what a QEMU worker powered on for a deployed
// function does before it runs it: hash the tree its kernel unpacked from
// the initramfs (5 MiB of executable and a few small files).
func BenchmarkPrepareDelivered(b *testing.B) {
	data := make([]byte, 5<<20)
	for i := range data {
		data[i] = byte(i * 7 >> 3)
	}
	tree := &bundle.Tree{Files: map[string]bundle.Entry{
		"bin/fn":       {Type: tar.TypeReg, Mode: 0o755, Data: data},
		"etc/passwd":   {Type: tar.TypeReg, Mode: 0o644, Data: []byte("root:x:0:0::/:/bin/sh\n")},
		"etc/hostname": {Type: tar.TypeReg, Mode: 0o644, Data: []byte("fn\n")},
	}}
	var buf bytes.Buffer
	if err := bundle.Encode(&buf, tree, bundle.Config{Entrypoint: []string{"/bin/fn"}}); err != nil {
		b.Fatal(err)
	}
	digest, _ := bundle.Digest(bytes.NewReader(buf.Bytes()))
	tb := testBundle{buf.Bytes(), protocol.BundleRef{Digest: digest, Size: int64(buf.Len())}}
	dir := deliver(b, b.TempDir(), tb)
	b.SetBytes(int64(buf.Len()))
	for b.Loop() {
		bs := &Bundles{Delivered: map[string]string{digest: dir}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		if _, _, err := bs.Prepare(tb.ref, nil); err != nil {
			b.Fatal(err)
		}
	}
}
