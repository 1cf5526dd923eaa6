package orchestrator

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/testlog"
	"github.com/microfaas/microfaas/orchestrator/power"
	"github.com/microfaas/microfaas/orchestrator/state"
	"github.com/microfaas/microfaas/protocol"
)

// Run-time deployed functions (issue 17): the orchestrator's side. The
// machine tests check which bundle a job and a power-on name; the session
// tests run a worker that speaks the real protocol from a script (the
// worker runtime's own fetch is tested in runtime/).

// dirBundles is a Bundles over a folder of bundle files named by digest,
// as orchestrator/deploy keeps them.
type dirBundles struct {
	dir      string
	deployed map[string]map[string]protocol.BundleRef // function -> arch -> bundle
}

func (d *dirBundles) Bundle(function, arch string) (protocol.BundleRef, bool) {
	ref, ok := d.deployed[function][arch]
	return ref, ok
}

func (d *dirBundles) Open(digest string) (*os.File, error) {
	return os.Open(filepath.Join(d.dir, strings.Replace(digest, ":", "-", 1)))
}

// add writes data as a bundle file and deploys function with it for arch.
func (d *dirBundles) add(t testing.TB, function, arch string, data []byte) protocol.BundleRef {
	t.Helper()
	sum := sha256.Sum256(data)
	ref := protocol.BundleRef{Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(data))}
	if err := os.WriteFile(filepath.Join(d.dir, "sha256-"+hex.EncodeToString(sum[:])), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if d.deployed == nil {
		d.deployed = map[string]map[string]protocol.BundleRef{}
	}
	if d.deployed[function] == nil {
		d.deployed[function] = map[string]protocol.BundleRef{}
	}
	d.deployed[function][arch] = ref
	return ref
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// A job of a deployed function names the bundle of its worker's
// architecture; so does the power-on it triggers. A baked-in function's
// job names none. Deployed functions are known at submit.
func TestMachineJobCarriesBundleForArch(t *testing.T) {
	b := &dirBundles{dir: t.TempDir()}
	x86 := b.add(t, "dep", "x86", []byte("x86 bundle"))
	arm := b.add(t, "dep", "arm", []byte("arm bundle"))
	ws := []cluster.Worker{
		{ID: "vm-x86", Kind: cluster.KindVM},
		{ID: "vm-arm", Kind: cluster.KindVM, VM: cluster.VMConfig{Arch: "arm"}},
		{ID: "bbb", Kind: cluster.KindBBB},
	}
	cfg := machineConfig{MaxBooting: 1, MaxAttempts: 3, MaxBootFailures: 3, PowerUpTimeout: time.Minute,
		JobTimeout: time.Minute, PowerOffHoldoff: 10 * time.Second, FirstIdle: 2 * time.Second, JobGrace: 15 * time.Second,
		ReportsExit: map[string]bool{cluster.KindVM: true}, Functions: []string{"baked"}, Bundles: b}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	x := &mtest{t: t, m: newMachine(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ws, now), now: now}

	submit := func(fn string) (*Invocation, error) {
		inv := &Invocation{ID: fmt.Sprintf("inv%d", len(x.all)), Function: fn, Timeout: time.Minute, Queued: x.now,
			HTTP: &protocol.HTTPRequest{Method: "POST", Path: "/x"}, done: make(chan struct{})}
		reply := make(chan error, 1)
		x.ev(0, evSubmit{inv, reply})
		for _, a := range x.acts {
			if r, ok := a.(actReply); ok {
				return inv, r.err
			}
		}
		t.Fatalf("no reply: %#v", x.acts)
		return nil, nil
	}
	if _, err := submit("nope"); !errors.Is(err, ErrUnknownFunction) {
		t.Fatalf("unknown function: err %v, want ErrUnknownFunction", err)
	}
	jobOf := func(acts []action) protocol.Job {
		for _, a := range acts {
			if s, ok := a.(actSend); ok && s.typ == protocol.TypeJob {
				return s.msg.(protocol.Job)
			}
		}
		t.Fatalf("no job sent: %#v", acts)
		return protocol.Job{}
	}
	for _, tt := range []struct {
		worker string
		want   *protocol.BundleRef
	}{
		{"vm-x86", &x86},
		{"vm-arm", &arm},
		{"bbb", &arm},
	} {
		// Workers boot one at a time (MaxBooting 1), in inventory order:
		// make the earlier ones busy first.
		inv, err := submit("dep")
		if err != nil {
			t.Fatalf("%s: a deployed function was refused: %v", tt.worker, err)
		}
		x.wantState(tt.worker, state.Booting)
		var on *actPowerOn
		for _, a := range x.acts {
			if p, ok := a.(actPowerOn); ok && p.w.ID == tt.worker {
				on = &p
			}
		}
		if on == nil || !reflect.DeepEqual(on.bundle, tt.want) {
			t.Errorf("%s: power-on bundle %+v, want %+v", tt.worker, on, tt.want)
		}
		job := jobOf(x.ev(time.Second, evHello{worker: tt.worker, conn: &workerConn{}, reply: make(chan helloReply, 1)}))
		if !reflect.DeepEqual(job.Bundle, tt.want) || job.ID != inv.ID {
			t.Errorf("%s: job bundle %+v, want %+v", tt.worker, job.Bundle, tt.want)
		}
		if job.HTTP == nil || job.HTTP.Path != "/x" {
			t.Errorf("%s: job HTTP %+v, want the invocation's request", tt.worker, job.HTTP)
		}
	}
	if _, err := submit("baked"); err != nil {
		t.Errorf("a baked-in function was refused: %v", err)
	}
}

// A scale-up (Warm, as the OpenFaaS provider's scale from zero makes it
// before the gateway sends the held call) powers a worker on with the
// bundle of the function it is for, for the worker's arch, as a power-on
// for a queued call does; the call that follows goes to that worker and
// boots no other.
func TestMachineWarmCarriesBundle(t *testing.T) {
	b := &dirBundles{dir: t.TempDir()}
	x86 := b.add(t, "dep", "x86", []byte("x86 bundle"))
	arm := b.add(t, "dep", "arm", []byte("arm bundle"))
	for _, tt := range []struct {
		name     string
		worker   cluster.Worker
		function string
		want     *protocol.BundleRef
	}{
		{"deployed x86", cluster.Worker{ID: "w", Kind: cluster.KindVM}, "dep", &x86},
		{"deployed arm", cluster.Worker{ID: "w", Kind: cluster.KindVM, VM: cluster.VMConfig{Arch: "arm"}}, "dep", &arm},
		{"baked-in", cluster.Worker{ID: "w", Kind: cluster.KindVM}, "baked", nil},
		{"no function", cluster.Worker{ID: "w", Kind: cluster.KindVM}, "", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := machineConfig{MaxBooting: 2, MaxAttempts: 3, MaxBootFailures: 3, PowerUpTimeout: time.Minute,
				JobTimeout: time.Minute, PowerOffHoldoff: 10 * time.Second, FirstIdle: 2 * time.Second, JobGrace: 15 * time.Second,
				ReportsExit: map[string]bool{cluster.KindVM: true}, Functions: []string{"baked"}, Bundles: b}
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			x := &mtest{t: t, m: newMachine(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), []cluster.Worker{tt.worker}, now), now: now}
			reply := make(chan int, 1)
			acts := x.ev(0, evWarm{function: tt.function, n: 1, reply: reply})
			var ons []actPowerOn
			for _, a := range acts {
				if p, ok := a.(actPowerOn); ok {
					ons = append(ons, p)
				}
			}
			if len(ons) != 1 || !reflect.DeepEqual(ons[0].bundle, tt.want) {
				t.Fatalf("warm for %q: power-ons %+v, want one with bundle %+v", tt.function, ons, tt.want)
			}
			if tt.function == "" {
				return
			}
			// The held call arrives while the worker boots: no second
			// power-on; the worker's hello lists the bundle it booted with
			// and the job names it.
			inv := &Invocation{ID: "call", Function: tt.function, Timeout: time.Minute, Queued: x.now, done: make(chan struct{})}
			if has(x.ev(time.Second, evSubmit{inv, make(chan error, 1)}), func(actPowerOn) bool { return true }) {
				t.Fatal("the call booted another worker while the warmed one was booting")
			}
			var held []string
			if tt.want != nil {
				held = []string{tt.want.Digest}
			}
			var job *protocol.Job
			for _, a := range x.ev(time.Second, evHello{worker: "w", bundles: held, conn: &workerConn{}, reply: make(chan helloReply, 1)}) {
				if s, ok := a.(actSend); ok && s.typ == protocol.TypeJob {
					j := s.msg.(protocol.Job)
					job = &j
				}
			}
			if job == nil || job.ID != "call" || !reflect.DeepEqual(job.Bundle, tt.want) {
				t.Fatalf("job on the warmed worker %+v, want call with bundle %+v", job, tt.want)
			}
		})
	}
}

// A warm worker's next job of a baked-in function names no bundle, and
// the power-on of a baked-in function carries none.
func TestMachineBakedInJobHasNoBundle(t *testing.T) {
	b := &dirBundles{dir: t.TempDir()}
	b.add(t, "dep", "x86", []byte("x86 bundle"))
	x := newMT(t, 1, func(c *machineConfig) { c.Bundles = b; c.IdleTimeout = time.Minute })
	inv := x.submit(time.Minute) // function "f": not deployed
	if !has(x.acts, func(p actPowerOn) bool { return p.bundle == nil }) {
		t.Fatalf("power-on for a baked-in function: %#v", x.acts)
	}
	x.hello("w0")
	if !has(x.all, func(s actSend) bool { j, ok := s.msg.(protocol.Job); return ok && j.Bundle == nil && j.ID == inv.ID }) {
		t.Fatalf("job of a baked-in function carries a bundle: %#v", x.all)
	}
}

// A function log longer than protocol.MaxLog is cut to its tail, at a
// character boundary.
func TestLogTail(t *testing.T) {
	long := strings.Repeat("é", protocol.MaxLog) // 2 bytes each
	got := logTail("start" + long)
	if len(got) > protocol.MaxLog || !strings.HasSuffix(long, got) || !strings.HasPrefix(got, "é") {
		t.Errorf("tail of %d bytes starts %q", len(got), got[:4])
	}
	if logTail("short") != "short" {
		t.Error("a short log was changed")
	}
}

// scriptWorkers is a power controller whose workers speak the real
// protocol over loopback, doing what the test's script says with each
// job. It takes bundles at power-on (power.BundleLoader) and keeps what
// it was given.
type scriptWorkers struct {
	orch   string
	secret []byte
	// script answers a job; it may fetch the bundle over pc first.
	script func(pc *protocol.Conn, job protocol.Job) protocol.Result

	mu       sync.Mutex
	conns    map[string]net.Conn
	onExit   func(string, error)
	atBoot   map[string][]byte // worker -> the bundle bytes its last power-on carried
	sessions sync.WaitGroup
}

func (s *scriptWorkers) PowerOn(ctx context.Context, w cluster.Worker) error {
	return s.start(w, nil)
}

func (s *scriptWorkers) PowerOnBundle(ctx context.Context, w cluster.Worker, b power.BootBundle) error {
	data, err := io.ReadAll(io.LimitReader(b.R, b.Size))
	if err != nil {
		return err
	}
	return s.start(w, data)
}

func (s *scriptWorkers) start(w cluster.Worker, bundle []byte) error {
	c, err := net.Dial("tcp", s.orch)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.conns == nil {
		s.conns, s.atBoot = map[string]net.Conn{}, map[string][]byte{}
	}
	s.conns[w.ID], s.atBoot[w.ID] = c, bundle
	s.mu.Unlock()
	s.sessions.Add(1)
	go func() {
		defer s.sessions.Done()
		err := s.session(c, w.ID)
		c.Close()
		s.mu.Lock()
		fn := s.onExit
		s.mu.Unlock()
		if fn != nil {
			fn(w.ID, err)
		}
	}()
	return nil
}

// session runs jobs until the orchestrator says power off or hangs up.
func (s *scriptWorkers) session(c net.Conn, id string) error {
	key, _ := protocol.WorkerKey(s.secret, id)
	pc, err := protocol.ClientHandshake(c, key, protocol.Hello{WorkerID: id, Arch: "amd64"})
	if err != nil {
		return err
	}
	for {
		typ, body, err := pc.Receive()
		if err != nil {
			return err
		}
		switch typ {
		case protocol.TypeJob:
			var job protocol.Job
			if err := json.Unmarshal(body, &job); err != nil {
				return err
			}
			res := s.script(pc, job)
			res.ID, res.Function = job.ID, job.Function
			if err := pc.Send(protocol.TypeResult, res); err != nil {
				return err
			}
		case protocol.TypeCommand:
			var cmd protocol.Command
			json.Unmarshal(body, &cmd)
			if cmd.Action == protocol.CmdPowerOff {
				return nil
			}
		}
	}
}

func (s *scriptWorkers) PowerOff(ctx context.Context, w cluster.Worker) error {
	s.mu.Lock()
	c := s.conns[w.ID]
	s.mu.Unlock()
	if c != nil {
		c.Close()
	}
	return nil
}

func (s *scriptWorkers) OnExit(fn func(string, error)) {
	s.mu.Lock()
	s.onExit = fn
	s.mu.Unlock()
}

// startScripted runs an orchestrator with one scripted worker.
func startScripted(t testing.TB, cfg Config, script func(*protocol.Conn, protocol.Job) protocol.Result) (*Orchestrator, *scriptWorkers, *testlog.Buffer) {
	t.Helper()
	if cfg.Cluster == nil {
		cfg.Cluster = cluster.Local(1)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sw := &scriptWorkers{orch: ln.Addr().String(), secret: cfg.Cluster.SecretBytes(), script: script}
	logs := &testlog.Buffer{}
	cfg.Controllers = map[string]power.Controller{cluster.KindVM: sw}
	cfg.Log = slog.New(slog.NewTextHandler(logs, nil))
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go o.Serve(ln)
	t.Cleanup(func() { o.Close(); ln.Close(); sw.sessions.Wait() })
	return o, sw, logs
}

// fetch asks for digest from offset 0 until it has size bytes, one
// chunk per request, then once more at the end (an empty chunk).
func fetch(pc *protocol.Conn, digest string, size int64) ([]byte, error) {
	var got []byte
	buf := make([]byte, protocol.BundleChunkSize)
	for {
		if err := pc.Send(protocol.TypeBundleRequest, protocol.BundleRequest{Digest: digest, Offset: int64(len(got))}); err != nil {
			return nil, err
		}
		c, err := pc.ReceiveBundleChunk(buf)
		if err != nil {
			return nil, err
		}
		switch {
		case c.Error != "":
			return got, errors.New(c.Error)
		case c.Offset != int64(len(got)) || len(c.Data) > protocol.BundleChunkSize:
			return got, fmt.Errorf("chunk at %d of %d bytes, asked for %d", c.Offset, len(c.Data), len(got))
		case len(c.Data) == 0:
			if int64(len(got)) != size {
				return got, fmt.Errorf("empty chunk at %d of %d", len(got), size)
			}
			return got, nil
		}
		got = append(got, c.Data...)
	}
}

// A worker fetches its job's bundle chunk by chunk over the session: the
// chunks put together are the file. A request for any other bundle is
// answered with an Error chunk (and logged), and the session goes on.
func TestBundleFetchServesOnlyTheJobsBundle(t *testing.T) {
	b := &dirBundles{dir: t.TempDir()}
	data := randomBytes(t, 2*protocol.BundleChunkSize+12345)
	ref := b.add(t, "dep", "x86", data)
	other := b.add(t, "other", "x86", []byte("another function's bundle"))
	type outcome struct {
		job          protocol.Job
		got          []byte
		fetchErr     error
		otherErr     error
		unalignedErr error
	}
	out := make(chan outcome, 1)
	o, sw, logs := startScripted(t, Config{Bundles: b, Functions: []string{"baked"}}, func(pc *protocol.Conn, job protocol.Job) protocol.Result {
		var r outcome
		r.job = job
		_, r.otherErr = fetch(pc, other.Digest, other.Size)
		r.got, r.fetchErr = fetch(pc, job.Bundle.Digest, job.Bundle.Size)
		// Past the end.
		pc.Send(protocol.TypeBundleRequest, protocol.BundleRequest{Digest: job.Bundle.Digest, Offset: job.Bundle.Size + 1})
		if c, err := pc.ReceiveBundleChunk(make([]byte, protocol.BundleChunkSize)); err == nil && c.Error != "" {
			r.unalignedErr = errors.New(c.Error)
		}
		select { // the first attempt's outcome; a retry's is dropped
		case out <- r:
		default:
		}
		return protocol.Result{Result: json.RawMessage(`"ok"`), Log: "fetched\n"}
	})
	inv, err := o.Invoke(testCtx(t), "dep", nil, 10*time.Second)
	if err != nil || inv.Err != nil {
		t.Fatalf("invoke: %v %v", err, inv.Err)
	}
	r := <-out
	if r.job.Bundle == nil || *r.job.Bundle != ref {
		t.Fatalf("job bundle %+v, want %+v", r.job.Bundle, ref)
	}
	if r.fetchErr != nil || !bytes.Equal(r.got, data) {
		t.Fatalf("fetch: %v; %d bytes, equal %v", r.fetchErr, len(r.got), bytes.Equal(r.got, data))
	}
	if r.otherErr == nil || !strings.Contains(r.otherErr.Error(), "not the bundle of this worker's job") {
		t.Errorf("another function's bundle: err %v, want a refusal", r.otherErr)
	}
	if r.unalignedErr == nil {
		t.Error("an offset past the end was not refused")
	}
	if !logs.Contains("bundle request refused") {
		t.Errorf("refusal not logged:\n%s", logs)
	}
	if inv.Log != "fetched\n" {
		t.Errorf("log %q", inv.Log)
	}
	// The power-on was for this invocation: its boot carried the bundle.
	sw.mu.Lock()
	atBoot := sw.atBoot["vm0"]
	sw.mu.Unlock()
	if !bytes.Equal(atBoot, data) {
		t.Errorf("power-on carried %d bytes, want the job's bundle (%d)", len(atBoot), len(data))
	}
}

// A worker that asks for the same chunk forever is cut off after
// maxBundleRequests: an Error chunk, then the connection closes and the
// job counts as lost.
func TestBundleFetchCutsOffLoopingWorker(t *testing.T) {
	b := &dirBundles{dir: t.TempDir()}
	data := randomBytes(t, protocol.BundleChunkSize+1)
	ref := b.add(t, "dep", "x86", data)
	type outcome struct {
		chunks int
		errMsg string
		end    error
	}
	out := make(chan outcome, 1)
	o, _, logs := startScripted(t, Config{Bundles: b, MaxAttempts: 1}, func(pc *protocol.Conn, job protocol.Job) protocol.Result {
		var r outcome
		buf := make([]byte, protocol.BundleChunkSize)
		for {
			if r.end = pc.Send(protocol.TypeBundleRequest, protocol.BundleRequest{Digest: job.Bundle.Digest}); r.end != nil {
				break
			}
			var c protocol.BundleChunk
			if c, r.end = pc.ReceiveBundleChunk(buf); r.end != nil {
				break
			}
			if c.Error != "" {
				r.errMsg = c.Error
				continue // and ask again: the orchestrator hangs up
			}
			r.chunks++
		}
		select { // the first attempt's outcome; a retry's is dropped
		case out <- r:
		default:
		}
		return protocol.Result{}
	})
	inv, err := o.Invoke(testCtx(t), "dep", nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := <-out
	if want := maxBundleRequests(ref.Size); r.chunks != want {
		t.Errorf("%d chunks served, want %d", r.chunks, want)
	}
	// The Error chunk races the forced power-off, which closes the
	// worker's end: the log says it was sent.
	if (r.errMsg != "" && !strings.Contains(r.errMsg, ErrBundleRequests.Error())) || r.end == nil {
		t.Errorf("cut-off: error chunk %q, then %v", r.errMsg, r.end)
	}
	if !logs.Contains(ErrBundleRequests.Error()) {
		t.Errorf("cut-off not logged:\n%s", logs)
	}
	if !errors.Is(inv.Err, ErrWorkerLost) || !strings.Contains(inv.Err.Error(), ErrBundleRequests.Error()) {
		t.Errorf("invocation: %v, want a lost worker that says why", inv.Err)
	}
}

// The HTTP request of a watchdog function's call goes to the worker in the
// job; its HTTP response and log come back in the invocation, and all
// three are kept by the store: a pending call keeps its request across a
// restart, a finished one its response and log.
func TestHTTPAndLogSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	cl := cluster.Local(1)
	b := &dirBundles{dir: t.TempDir()}
	b.add(t, "web", "x86", []byte("a watchdog image's bundle"))
	req := &protocol.HTTPRequest{Method: "PUT", Path: "/items/7", Query: "a=1&b=2",
		Header: map[string][]string{"X-Test": {"one", "two"}}, Body: []byte{0, 1, 2, 0xff}}
	resp := &protocol.HTTPResponse{Status: 418, Header: map[string][]string{"X-Answer": {"42"}}, Body: []byte{0xff, 0, 0xfe}}

	// First run: no worker at all; the call stays pending.
	store, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	o1, err := New(Config{Cluster: cluster.Local(0), Store: store, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := o1.SubmitJob(JobSpec{Function: "web", HTTP: req, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	id := inv.ID
	o1.Close()
	store.Close()

	// Second run: the worker gets the request as it was sent.
	store, err = OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	gotReq := make(chan *protocol.HTTPRequest, 1)
	o2, _, _ := startScripted(t, Config{Cluster: cl, Store: store, Bundles: b}, func(pc *protocol.Conn, job protocol.Job) protocol.Result {
		gotReq <- job.HTTP
		return protocol.Result{HTTP: resp, Log: "handled PUT\n"}
	})
	select {
	case r := <-gotReq:
		if !reflect.DeepEqual(r, req) {
			t.Errorf("request after a restart: %+v, want %+v", r, req)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pending call never ran after the restart")
	}
	done, ok := o2.Lookup(id)
	if !ok {
		t.Fatal("the running call is not found")
	}
	select {
	case <-done.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("never finished")
	}
	if done.Err != nil || !reflect.DeepEqual(done.HTTPResponse, resp) || done.Log != "handled PUT\n" {
		t.Fatalf("finished: err %v response %+v log %q", done.Err, done.HTTPResponse, done.Log)
	}
	o2.Close()
	store.Close()

	// Third: read back from disk.
	store, err = OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	got, ok, err := store.Get(id)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	// A finished record keeps the call but not the caller's headers (they
	// may carry an Authorization or cookies; see TestRequestHeadersNotInDatabaseFile).
	wantStored := *req
	wantStored.Header = nil
	if !reflect.DeepEqual(got.HTTP, &wantStored) || !reflect.DeepEqual(got.HTTPResponse, resp) || got.Log != "handled PUT\n" {
		t.Errorf("stored: request %+v response %+v log %q", got.HTTP, got.HTTPResponse, got.Log)
	}
	if r := Response(got); !reflect.DeepEqual(r.HTTP, resp) || r.Log != got.Log {
		t.Errorf("API response: %+v", r)
	}
}

// testCtx ends with the test, or after 30 s, so a failing test does not hang.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Two workers boot for two deployed functions; the one that says hello
// first holds the second function's bundle (its boot carried it): it runs
// that one, not the queue's head, and saves a fetch. A worker holding no
// queued function's bundle takes the head.
func TestMachinePrefersHeldBundle(t *testing.T) {
	b := &dirBundles{dir: t.TempDir()}
	one := b.add(t, "one", "x86", []byte("bundle one"))
	two := b.add(t, "two", "x86", []byte("bundle two"))
	x := newMT(t, 3, func(c *machineConfig) { c.Bundles = b })
	submit := func(fn string) *Invocation {
		inv := &Invocation{ID: "inv-" + fn, Function: fn, Timeout: time.Minute, Queued: x.now, done: make(chan struct{})}
		x.ev(0, evSubmit{inv, make(chan error, 1)})
		return inv
	}
	invOne, invTwo := submit("one"), submit("two")
	jobFor := func(worker string, bundles ...string) string {
		t.Helper()
		acts := x.ev(time.Second, evHello{worker: worker, bundles: bundles, conn: &workerConn{}, reply: make(chan helloReply, 1)})
		for _, a := range acts {
			if s, ok := a.(actSend); ok && s.typ == protocol.TypeJob {
				return s.msg.(protocol.Job).ID
			}
		}
		t.Fatalf("%s got no job: %#v", worker, acts)
		return ""
	}
	if got := jobFor("w1", two.Digest); got != invTwo.ID {
		t.Errorf("the worker holding bundle two ran %s, want %s", got, invTwo.ID)
	}
	if got := jobFor("w0", one.Digest); got != invOne.ID {
		t.Errorf("w0 ran %s, want %s", got, invOne.ID)
	}
	// No bundle held: FIFO.
	invA := submit("one")
	submit("two")
	if got := jobFor("w2"); got != invA.ID {
		t.Errorf("a worker holding nothing ran %s, want the head %s", got, invA.ID)
	}
}

// BenchmarkBundleFetch is a job whose worker fetches a 5 MB bundle over
// the session (loopback TCP, the orchestrator and the scripted worker in
// one process): what a board, a snapshot boot or a worker that booted for
// another function pays instead of the boot initramfs.
func BenchmarkBundleFetch(b *testing.B) {
	bs := &dirBundles{dir: b.TempDir()}
	data := make([]byte, 5<<20)
	rand.Read(data)
	bs.add(b, "dep", "x86", data)
	failed := make(chan error, 1)
	o, _, _ := startScripted(b, Config{Bundles: bs, IdleTimeout: time.Hour}, func(pc *protocol.Conn, job protocol.Job) protocol.Result {
		got, err := fetch(pc, job.Bundle.Digest, job.Bundle.Size)
		if err == nil && len(got) != len(data) {
			err = fmt.Errorf("%d bytes", len(got))
		}
		if err != nil {
			select {
			case failed <- err:
			default:
			}
		}
		return protocol.Result{Result: json.RawMessage(`1`)}
	})
	ctx := context.Background()
	o.Invoke(ctx, "dep", nil, time.Minute) // boot the worker
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if inv, err := o.Invoke(ctx, "dep", nil, time.Minute); err != nil || inv.Err != nil {
			b.Fatal(err, inv.Err)
		}
	}
	select {
	case err := <-failed:
		b.Fatal(err)
	default:
	}
}

// A worker gets only jobs of functions it runs (its hello's): one whose
// image lacks the queue's head takes the next it can run, and one that can
// run nothing queued takes nothing.
func TestMachineJobsOnlyForFunctionsWorkerRuns(t *testing.T) {
	x := newMT(t, 3, nil)
	submit := func(id, fn string) *Invocation {
		inv := &Invocation{ID: id, Function: fn, Timeout: time.Minute, Queued: x.now, done: make(chan struct{})}
		x.ev(0, evSubmit{inv, make(chan error, 1)})
		return inv
	}
	hello := func(worker string, functions ...string) string {
		t.Helper()
		acts := x.ev(time.Second, evHello{worker: worker, functions: functions, conn: &workerConn{}, reply: make(chan helloReply, 1)})
		for _, a := range acts {
			if s, ok := a.(actSend); ok && s.typ == protocol.TypeJob {
				return s.msg.(protocol.Job).ID
			}
		}
		return ""
	}
	submit("i-a", "a")
	submit("i-b", "b")
	if got := hello("w0", "b"); got != "i-b" {
		t.Errorf("w0 (runs b) got %q, want i-b", got)
	}
	if got := hello("w1", "c"); got != "" {
		t.Errorf("w1 (runs c) got %q, want no job", got)
	}
	if got := hello("w2", "a", "c"); got != "i-a" {
		t.Errorf("w2 (runs a, c) got %q, want i-a", got)
	}
}
