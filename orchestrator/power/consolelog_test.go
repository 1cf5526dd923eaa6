package power

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/target"
)

// TestConsoleLogPrivate: issue 18, attack 8. A worker's console log (what
// the worker logs of its jobs) is owner-only, and so is a console folder
// the controller makes. The "qemu" here is true(1): the log is made
// before it starts.
func TestConsoleLogPrivate(t *testing.T) {
	tg := *target.X86
	tg.QEMU.Binary = "true"
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "bzImage"), filepath.Join(dir, "initramfs.cpio")
	for _, f := range []string{kernel, initrd} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logs := filepath.Join(dir, "consoles")
	c := cluster.Local(1)
	c.Network.Port = 7000
	q, err := NewQEMU(context.Background(), QEMUConfig{Arch: &tg, Kernel: kernel, Initrd: initrd, Accel: "tcg",
		Cluster: c, LogDir: logs, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	exited := make(chan struct{})
	q.OnExit(func(string, error) { close(exited) })
	if err := q.PowerOn(context.Background(), c.Workers[0]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("true(1) did not exit")
	}
	for path, want := range map[string]os.FileMode{q.LogPath("vm0"): 0o600, logs: 0o700} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, %v; want mode %v", path, fi.Mode().Perm(), err, want)
		}
	}
}
