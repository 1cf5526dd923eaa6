package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/runtime/functions"
)

func init() {
	functions.Register("test_panic", func(context.Context, functions.Env, json.RawMessage) (any, error) {
		var m map[string]int
		m["boom"]++ // nil map write: a real runtime panic
		return nil, nil
	})
	functions.Register("test_ignore_deadline", func(ctx context.Context, _ functions.Env, _ json.RawMessage) (any, error) {
		time.Sleep(2 * time.Second) // a function that does not watch its context
		return "late", nil
	})
}

// TestConfigFrom reads the worker's Config as Boot does: the command line
// parsed once, then ConfigFrom.
func TestConfigFrom(t *testing.T) {
	tests := []struct {
		name, in string
		want     Config
		err      error
	}{
		{"full", "console=ttyS0 mf.id=vm1 mf.orch=10.0.2.2:63302 mf.off=reboot mf.failsafe=30 mf.iface=eth1",
			Config{ID: "vm1", Orch: "10.0.2.2:63302", OffMode: "reboot", Failsafe: 30 * time.Second, Iface: "eth1"}, nil},
		{"defaults", "mf.id=w mf.orch=h:1", Config{ID: "w", Orch: "h:1", OffMode: "poweroff", Failsafe: 120 * time.Second, Iface: "eth0"}, nil},
		{"probe needs nothing else", "mf.probe=1", Config{Probe: true, OffMode: "poweroff", Failsafe: 120 * time.Second, Iface: "eth0"}, nil},
		{"missing id", "mf.orch=h:1", Config{}, bootparams.ErrMissing},
		{"snapshot: id and orchestrator come later", "mf.snapshot=1", Config{Snapshot: true, OffMode: "poweroff", Failsafe: 120 * time.Second, Iface: "eth0"}, nil},
		{"missing orch", "mf.id=w", Config{}, bootparams.ErrMissing},
		// Workers have their own keys: the cluster secret is no parameter.
		{"the cluster secret", "mf.id=w mf.orch=h:1 mf.secret=01", Config{}, bootparams.ErrInvalid},
		{"bad off", "mf.id=w mf.orch=h:1 mf.off=halt", Config{}, bootparams.ErrInvalid},
		{"bad failsafe", "mf.id=w mf.orch=h:1 mf.failsafe=-3", Config{}, bootparams.ErrInvalid},
		{"id that would rewrite ip=", "mf.id=w:1 mf.orch=h:1", Config{}, bootparams.ErrInvalid},
		{"second orchestrator", "mf.id=w mf.orch=h:1 mf.orch=evil:1", Config{}, bootparams.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := bootparams.Parse(tt.in)
			var got Config
			if err == nil {
				got, err = ConfigFrom(p)
			}
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tt.want.ID || got.Orch != tt.want.Orch || got.OffMode != tt.want.OffMode || got.Failsafe != tt.want.Failsafe || got.Iface != tt.want.Iface || got.Probe != tt.want.Probe || got.Snapshot != tt.want.Snapshot {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRunFunction(t *testing.T) {
	ctx := context.Background()
	out, err := RunFunction(ctx, functions.Env{}, "cascading_md5", json.RawMessage(`{"data":"abc","rounds":1}`), time.Second)
	if err != nil || string(out) != `"900150983cd24fb0d6963f7d28e17f72"` {
		t.Fatalf("md5(abc) = %s, %v", out, err)
	}
	_, err = RunFunction(ctx, functions.Env{}, "test_panic", nil, time.Second)
	if err == nil || !strings.Contains(err.Error(), "test_panic panicked") {
		t.Fatalf("panic: err = %v", err)
	}
	start := time.Now()
	_, err = RunFunction(ctx, functions.Env{}, "test_ignore_deadline", nil, 100*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("overrun: err = %v after %v", err, time.Since(start))
	}
	_, err = RunFunction(ctx, functions.Env{}, "nope", nil, time.Second)
	if !errors.Is(err, functions.ErrUnknown) {
		t.Fatalf("unknown function: %v", err)
	}
}

// FuzzJob feeds arbitrary job bodies through the worker's decoder and
// function dispatch: any input gives a result or an error, never a panic.
func FuzzJob(f *testing.F) {
	for _, s := range []string{
		`{"i_id":"a","f_id":"cascading_sha256","f_args":{"data":"x","rounds":2}}`,
		`{"i_id":"a","f_id":"matmul","f_args":{"A":[[1]],"B":[[2]]}}`,
		`{"i_id":"a","f_id":"zlib_decompress","f_args":{"data":"zz"}}`,
		`{"f_id":"float_operations","f_args":{"n":"many"}}`, `{"f_id":7}`, `[]`, `{"timeout_ms":-1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var job protocol.Job
		if err := json.Unmarshal(body, &job); err != nil {
			return
		}
		if job.Function == "test_ignore_deadline" || job.Function == "test_panic" {
			return
		}
		out, err := RunFunction(context.Background(), functions.Env{EtcDir: t.TempDir(), DownloadDir: t.TempDir()},
			job.Function, job.Args, 200*time.Millisecond)
		if err == nil && !json.Valid(out) {
			t.Fatalf("%s: invalid JSON result %q", job.Function, out)
		}
	})
}

// TestJobEnvAndSecrets runs a user function through the worker's job path:
// the job's env reaches its environment, its secrets are files in the
// secrets directory while it runs, and they are gone afterwards; its
// stderr is the result's log.
func TestJobEnvAndSecrets(t *testing.T) {
	fdir, sdir := t.TempDir(), filepath.Join(t.TempDir(), "secrets")
	script := "#!/bin/sh\necho to the log >&2\nprintf '%s %s' \"$GREETING\" \"$(cat " + sdir + "/api-key)\"\n"
	if err := os.WriteFile(filepath.Join(fdir, "show"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	w := &Worker{Env: functions.Env{FunctionsDir: fdir}, SecretsDir: sdir}
	res, _ := w.runJob(context.Background(), protocol.Job{ID: "j1", Function: "show", Args: json.RawMessage(`""`),
		Env: map[string]string{"GREETING": "hello"}, Secrets: map[string][]byte{"api-key": []byte("s3cr3t")}}, nil)
	if res.Error != "" || string(res.Result) != `"hello s3cr3t"` {
		t.Fatalf("result %s, error %q", res.Result, res.Error)
	}
	if res.Log != "to the log\n" {
		t.Errorf("log %q: a baked-in user function's stderr comes back too", res.Log)
	}
	if _, err := os.Stat(filepath.Join(sdir, "api-key")); !os.IsNotExist(err) {
		t.Errorf("the secret outlived its job: %v", err)
	}
	res, _ = w.runJob(context.Background(), protocol.Job{ID: "j2", Function: "show", Secrets: map[string][]byte{"../evil": nil}}, nil)
	if !strings.Contains(res.Error, "bad secret name") {
		t.Errorf("path in a secret name: %q", res.Error)
	}
}

// TestWorkerVersion2 runs the real worker against the orchestrator's side of
// the version-2 handshake over TCP: its own key, a job with a secret, the
// result.
func TestWorkerVersion2(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	key, err := protocol.WorkerKey(secret, "vm0")
	if err != nil {
		t.Fatal(err)
	}
	// The key arrives as a file the worker deletes after reading.
	kf := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(kf, protocol.EncodeKey(key), 0o400); err != nil {
		t.Fatal(err)
	}
	got, err := TakeKey(kf)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("TakeKey = %x, %v", got, err)
	}
	if _, err := os.Stat(kf); !os.IsNotExist(err) {
		t.Fatalf("the key file outlived TakeKey: %v", err)
	}
	if k, err := TakeKey(kf); k != nil || err != nil {
		t.Fatalf("no key file: %x, %v", k, err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fdir := t.TempDir()
	os.WriteFile(filepath.Join(fdir, "show"), []byte("#!/bin/sh\ncat /var/openfaas/secrets/token\n"), 0o755)
	w := &Worker{Config: Config{ID: "vm0", Orch: ln.Addr().String(), Failsafe: 10 * time.Second}, Key: key,
		Env: functions.Env{FunctionsDir: fdir}, Log: slog.Default()}
	connected := make(chan struct{})
	w.Connected = func() { close(connected) }
	done := make(chan Outcome, 1)
	go func() { done <- w.Run(context.Background()) }()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc, h, err := protocol.ServerHandshake(c, c.RemoteAddr(), protocol.ClusterKeys(secret, map[string]string{"vm0": "127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	if h.WorkerID != "vm0" || h.Proto != protocol.Version {
		t.Fatalf("hello %+v", h)
	}
	select { // the after-hello set-up runs (mfinit's sandbox preparation)
	case <-connected:
	case <-time.After(10 * time.Second):
		t.Fatal("Connected did not run after the hello")
	}
	if err := pc.Send(protocol.TypeJob, protocol.Job{ID: "j1", Function: "show", Args: json.RawMessage(`""`),
		Secrets: map[string][]byte{"token": []byte("t0k3n")}}); err != nil {
		t.Fatal(err)
	}
	var res protocol.Result
	if err := pc.Expect(protocol.TypeResult, &res); err != nil {
		t.Fatal(err)
	}
	if res.Error != "" || string(res.Result) != `"t0k3n"` {
		t.Fatalf("result %s, error %q", res.Result, res.Error)
	}
	pc.Send(protocol.TypeCommand, protocol.Command{Action: protocol.CmdPowerOff})
	if out := <-done; out.Action != protocol.CmdPowerOff {
		t.Fatalf("outcome %+v", out)
	}
}
