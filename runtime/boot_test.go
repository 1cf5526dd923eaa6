package runtime

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/protocol"
)

var wantSteps = []string{
	"init marker", "key file", "bundle files", "mounts", "boot parameters", "debug shell", "flasher", "probe",
	"check parameters", "card key", "snapshot sandbox", "network", "identity", "serve",
}

// TestBootSteps: the boot's steps, in order. The key is taken before the
// mounts (a tmpfs on /run would hide it) and before anything else runs.
func TestBootSteps(t *testing.T) {
	var got []string
	for _, s := range bootSteps {
		got = append(got, s.name)
	}
	if !slices.Equal(got, wantSteps) {
		t.Fatalf("steps %q\nwant %q", got, wantSteps)
	}
}

// TestBootStepsDocumented: Boot's doc comment lists the steps a reader
// follows, numbered, in the order they run.
func TestBootStepsDocumented(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "boot.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var doc string
	for _, d := range f.Decls {
		if fn, ok := d.(*ast.FuncDecl); ok && fn.Name.Name == "Boot" && fn.Recv == nil {
			doc = fn.Doc.Text()
		}
	}
	var listed []string
	for _, line := range strings.Split(doc, "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != strconv.Itoa(len(listed)+1) {
			continue
		}
		rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), fields[0]))
		for _, s := range bootSteps {
			if strings.HasPrefix(rest, s.name+" ") {
				listed = append(listed, s.name)
				break
			}
		}
	}
	if !slices.Equal(listed, wantSteps) {
		t.Fatalf("Boot's comment lists %q\nwant %q", listed, wantSteps)
	}
}

// TestRunSteps runs injected step tables: a failing step ends the boot
// with a *StepError that names it and wraps its error; a step that ends
// the boot as planned ends it without one; later steps do not run.
func TestRunSteps(t *testing.T) {
	errBroken := errors.New("broken")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name     string
		ctx      context.Context
		results  []error // one step each, named s0, s1, ...
		wantRan  []string
		wantStep string // "": no error
		wantErr  error
	}{
		{"all run", context.Background(), []error{nil, nil, nil}, []string{"s0", "s1", "s2"}, "", nil},
		{"second fails", context.Background(), []error{nil, errBroken, nil}, []string{"s0", "s1"}, "s1", errBroken},
		{"first fails", context.Background(), []error{errBroken, nil}, []string{"s0"}, "s0", errBroken},
		{"ended as planned", context.Background(), []error{nil, errEnd, nil}, []string{"s0", "s1"}, "", nil},
		{"cancelled before the first", cancelled, []error{nil}, nil, "s0", context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ran []string
			var steps []step
			for i, res := range tt.results {
				name := "s" + string(rune('0'+i))
				steps = append(steps, step{name, func(*booting, context.Context) error {
					ran = append(ran, name)
					return res
				}})
			}
			err := runSteps(tt.ctx, steps, &booting{})
			if !slices.Equal(ran, tt.wantRan) {
				t.Errorf("ran %q, want %q", ran, tt.wantRan)
			}
			if tt.wantStep == "" {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				return
			}
			var se *StepError
			if !errors.As(err, &se) || se.Step != tt.wantStep || !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %#v, want a StepError for %s wrapping %v", err, tt.wantStep, tt.wantErr)
			}
			if !strings.Contains(err.Error(), `"`+tt.wantStep+`"`) {
				t.Fatalf("%q does not name the step %s", err, tt.wantStep)
			}
		})
	}
}

// fakeMachine records what the boot did to it, in order.
type fakeMachine struct {
	calls    []string
	console  bytes.Buffer
	cmdline  string
	keyFile  []byte
	keyErr   error
	card     []byte
	identity string // console input
	outcome  Outcome
	served   *Worker
	panicIn  string // a call that panics
}

func (f *fakeMachine) call(name string) {
	f.calls = append(f.calls, name)
	if name == f.panicIn {
		panic("injected panic in " + name)
	}
}

func (f *fakeMachine) machine(t *testing.T, functionsDir string) machine {
	up := 100.0
	return machine{
		console:    &f.console,
		input:      strings.NewReader(f.identity),
		noEcho:     func() error { f.call("noecho"); return nil },
		log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		uptime:     func() float64 { up += 10; return up },
		takeKey:    func() ([]byte, error) { f.call("takekey"); return f.keyFile, f.keyErr },
		mount:      func() error { f.call("mount"); return errors.New("not root") },
		cmdline:    func() (string, error) { f.call("cmdline"); return f.cmdline, nil },
		debugShell: func(*slog.Logger) waiter { f.call("shell"); return waitFunc(func() { f.call("shell wait") }) },
		flash: func(_ io.Writer, p bootparams.Params, err error) {
			f.call("flash")
			if p.Flash == nil || err != nil {
				t.Errorf("flasher got %+v, %v", p.Flash, err)
			}
		},
		cardKey:      func() ([]byte, error) { f.call("cardkey"); return f.card, nil },
		sandbox:      func() error { f.call("sandbox"); return nil },
		waitLink:     func(iface string) error { f.call("link " + iface); return nil },
		reseed:       func([]byte) error { f.call("reseed"); return nil },
		setClock:     func(time.Time) error { f.call("clock"); return nil },
		functionsDir: functionsDir,
		serve: func(w *Worker, _ context.Context) Outcome {
			f.call("serve")
			f.served = w
			return f.outcome
		},
		powerOff: func(mode string) error { f.call("off " + mode); return nil },
	}
}

type waitFunc func()

func (w waitFunc) Wait() { w() }

// TestBoot boots on a fake machine: what each kind of boot does, in what
// order, what it tells the console, and how it powers off.
func TestBoot(t *testing.T) {
	key := bytes.Repeat([]byte{7}, protocol.KeySize)
	id := protocol.Identity{ID: "vm3", Orch: "10.0.2.2:4000", Key: hex.EncodeToString(key),
		Seed: strings.Repeat("ab", protocol.SeedSize), NowUnixNS: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC).UnixNano()}
	errKeyFile := errors.New("key file unreadable")
	const ok = "console=ttyS0 mf.id=w1 mf.orch=h:1 mf.off=reboot"
	tests := []struct {
		name     string
		f        fakeMachine
		userFn   bool // the worker has a user function
		calls    []string
		console  []string // markers on the console, in order
		step     string   // the failing step; "": none
		err      error
		workerID string // who served; "": nobody
	}{
		{name: "full boot", f: fakeMachine{cmdline: ok, keyFile: key},
			calls:   []string{"takekey", "mount", "cmdline", "link eth0", "serve", "off reboot"},
			console: []string{protocol.InitMarker}, workerID: "w1"},
		{name: "user functions: the sandbox once connected", f: fakeMachine{cmdline: ok, keyFile: key}, userFn: true,
			calls:   []string{"takekey", "mount", "cmdline", "link eth0", "serve", "off reboot"},
			console: []string{protocol.InitMarker}, workerID: "w1"},
		{name: "told to reboot", f: fakeMachine{cmdline: "mf.id=w1 mf.orch=h:1 mf.iface=eth1", keyFile: key,
			outcome: Outcome{Action: protocol.CmdReboot}},
			calls:   []string{"takekey", "mount", "cmdline", "link eth1", "serve", "off reboot"},
			console: []string{protocol.InitMarker}, workerID: "w1"},
		{name: "a board: key from its card", f: fakeMachine{cmdline: "mf.id=w1 mf.orch=h:1", card: key},
			calls:   []string{"takekey", "mount", "cmdline", "cardkey", "link eth0", "serve", "off poweroff"},
			console: []string{protocol.InitMarker}, workerID: "w1"},
		{name: "no key anywhere", f: fakeMachine{cmdline: ok},
			calls:   []string{"takekey", "mount", "cmdline", "cardkey", "off reboot"},
			console: []string{protocol.InitMarker}, step: "card key", err: ErrNoKey},
		{name: "unreadable key file", f: fakeMachine{cmdline: ok, keyErr: errKeyFile},
			calls:   []string{"takekey", "mount", "cmdline", "off reboot"},
			console: []string{protocol.InitMarker}, step: "card key", err: errKeyFile},
		{name: "probe", f: fakeMachine{cmdline: "mf.probe=1"},
			calls:   []string{"takekey", "mount", "cmdline", "off poweroff"},
			console: []string{protocol.InitMarker, protocol.ProbeMarker}},
		{name: "flasher", f: fakeMachine{cmdline: flasherCmdline(t)},
			calls:   []string{"takekey", "mount", "cmdline", "flash", "off poweroff"},
			console: []string{protocol.InitMarker}},
		{name: "debug shell: the power-off waits for it", f: fakeMachine{cmdline: ok + " mf.debug=1", keyFile: key},
			calls:   []string{"takekey", "mount", "cmdline", "shell", "link eth0", "serve", "shell wait", "off reboot"},
			console: []string{protocol.InitMarker}, workerID: "w1"},
		// A bad command line still gives its power-off mode and debug shell.
		{name: "bad command line", f: fakeMachine{cmdline: "mf.off=reboot mf.debug=1 mf.id=w:1 mf.orch=h:1"},
			calls:   []string{"takekey", "mount", "cmdline", "shell", "shell wait", "off reboot"},
			console: []string{protocol.InitMarker}, step: "check parameters", err: bootparams.ErrInvalid},
		{name: "no worker id", f: fakeMachine{cmdline: "mf.orch=h:1"},
			calls:   []string{"takekey", "mount", "cmdline", "off poweroff"},
			console: []string{protocol.InitMarker}, step: "check parameters", err: bootparams.ErrMissing},
		{name: "snapshot boot", userFn: true,
			f:       fakeMachine{cmdline: "mf.snapshot=1 mf.off=reboot", identity: "noise\n" + string(protocol.EncodeIdentity(id))},
			calls:   []string{"takekey", "mount", "cmdline", "sandbox", "link eth0", "noecho", "reseed", "clock", "serve", "off reboot"},
			console: []string{protocol.InitMarker, protocol.SnapshotReadyMarker}, workerID: "vm3"},
		{name: "snapshot boot, bad identity",
			f:       fakeMachine{cmdline: "mf.snapshot=1", identity: protocol.IdentityPrefix + "{}\n"},
			calls:   []string{"takekey", "mount", "cmdline", "sandbox", "link eth0", "noecho", "off poweroff"},
			console: []string{protocol.InitMarker, protocol.SnapshotReadyMarker}, step: "identity", err: protocol.ErrBadIdentity},
		{name: "a panic powers off", f: fakeMachine{cmdline: ok, keyFile: key, panicIn: "serve"},
			calls:   []string{"takekey", "mount", "cmdline", "link eth0", "serve", "off reboot"},
			console: []string{protocol.InitMarker}, err: ErrPanicked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.userFn {
				if err := os.WriteFile(filepath.Join(dir, "hello"), []byte("#!/bin/sh\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			f := &tt.f
			err := f.machine(t, dir).boot(context.Background())
			if !slices.Equal(f.calls, tt.calls) {
				t.Errorf("calls %q\nwant  %q", f.calls, tt.calls)
			}
			var markers []string
			for _, line := range strings.Split(strings.TrimSpace(f.console.String()), "\n") {
				markers = append(markers, strings.Fields(line)[0])
			}
			if !slices.Equal(markers, tt.console) {
				t.Errorf("console %q, want markers %q", f.console.String(), tt.console)
			}
			switch {
			case tt.err == nil && err != nil:
				t.Fatalf("err = %v, want nil", err)
			case tt.err != nil && !errors.Is(err, tt.err):
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			var se *StepError
			if got := errors.As(err, &se); got != (tt.step != "") || (got && se.Step != tt.step) {
				t.Fatalf("err = %v, want a failure of step %q", err, tt.step)
			}
			if tt.workerID == "" {
				return
			}
			w := f.served
			if w.Config.ID != tt.workerID || !bytes.Equal(w.Key, key) || w.Boot.InitMS == 0 || w.Boot.NetworkMS <= w.Boot.InitMS {
				t.Fatalf("served as %q, key %x, boot %+v", w.Config.ID, w.Key, w.Boot)
			}
			if w.Config.Snapshot != (w.Boot.RestoredMS > w.Boot.NetworkMS) {
				t.Fatalf("snapshot %v, boot %+v", w.Config.Snapshot, w.Boot)
			}
			// A full boot with user functions sets the sandbox up once
			// connected; a snapshot boot did it before the snapshot.
			if wantHook := tt.userFn && !w.Config.Snapshot; (w.Connected != nil) != wantHook {
				t.Fatalf("sandbox once connected: %v, want %v", w.Connected != nil, wantHook)
			}
		})
	}
}

func flasherCmdline(t *testing.T) string {
	s, err := bootparams.Params{Flash: &bootparams.Flash{Src: "/dev/mmcblk0p2", Dst: "/dev/mmcblk1", Size: 1,
		SHA256: bytes.Repeat([]byte{1}, 32)}}.Render()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBootTakesBundles: the bundles the kernel unpacked from the
// initramfs are found before the mounts, hashed from the network step on,
// and handed to the worker, whose hello lists them and whose job runs the
// tree in place; the worker then sets the sandbox up once connected.
func TestBootTakesBundles(t *testing.T) {
	f := &fakeMachine{cmdline: "mf.id=w1 mf.orch=h:1", keyFile: bytes.Repeat([]byte{7}, protocol.KeySize)}
	m := f.machine(t, t.TempDir())
	b := makeBundle(t, "fn", []byte("#!/bin/sh\necho hi\n"))
	run := t.TempDir()
	dir := deliver(t, run, b)
	m.takeBundles = func() (map[string]string, error) {
		f.call("takebundles")
		return TakeBundles(run)
	}
	m.bundleDir = t.TempDir()
	if err := m.boot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := []string{"takekey", "takebundles", "mount"}; !slices.Equal(f.calls[:3], want) {
		t.Errorf("calls %q, want %q first", f.calls, want)
	}
	w := f.served
	if w == nil || w.Bundles == nil {
		t.Fatalf("the worker did not get the delivered bundles: %+v", w)
	}
	if held := w.Bundles.Held(); !slices.Equal(held, []string{b.ref.Digest}) {
		t.Errorf("held %v, want the delivered bundle", held)
	}
	got, cfg, err := w.Bundles.Prepare(b.ref, nil)
	if err != nil || got != dir || cfg.Entrypoint[0] != "/bin/fn" {
		t.Errorf("prepared %s %+v %v, want the delivered tree %s in place", got, cfg, err, dir)
	}
	if w.Connected == nil {
		t.Error("a worker with a bundle should set its sandbox up once connected")
	}
}
