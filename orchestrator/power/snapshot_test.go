package power

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/target"
)

// A snapshot is shared by workers: its command line names none of them, and
// the worker waits for its identity instead.
func TestSnapshotCmdlineNamesNoWorker(t *testing.T) {
	c := cluster.Local(2)
	c.Network.Port = 7000
	q := &QEMU{cfg: QEMUConfig{Arch: target.X86, Cluster: c, Failsafe: 30}, accel: "tcg"}
	var lines []string
	for _, w := range c.Workers {
		s, err := q.cmdline(w, true)
		if err != nil {
			t.Fatal(err)
		}
		p, err := bootparams.Parse(s)
		if err != nil {
			t.Fatalf("worker side: %v", err)
		}
		if !p.Snapshot || p.ID != "" || p.Net.Hostname != snapshotHostname || p.Orch != "" {
			t.Fatalf("snapshot command line %q parsed as %+v", s, p)
		}
		if strings.Contains(s, w.ID) || strings.Contains(s, "7000") {
			t.Fatalf("snapshot command line %q names worker %s or the orchestrator's port", s, w.ID)
		}
		lines = append(lines, s)
	}
	if lines[0] != lines[1] {
		t.Fatalf("two workers on one network got different snapshot command lines:\n%s\n%s", lines[0], lines[1])
	}
}

func TestSnapshotConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		arch *target.Target
		boot string
		dir  string
		err  error // nil: accepted
	}{
		{"full", target.ARMv7, "", "", nil},
		{"full by name", target.X86, BootFull, "", nil},
		{"snapshot on x86", target.X86, BootSnapshot, "snaps", nil},
		{"snapshot on ARM", target.ARMv7, BootSnapshot, "snaps", ErrSnapshot},
		{"folder the shell would misread", target.X86, BootSnapshot, "it's", ErrSnapshot},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := ""
			if tt.dir != "" {
				dir = filepath.Join(t.TempDir(), tt.dir)
			}
			q := &QEMU{cfg: QEMUConfig{Arch: tt.arch, Boot: tt.boot, SnapshotDir: dir}}
			err := q.checkSnapshotConfig()
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
		})
	}
	q := &QEMU{cfg: QEMUConfig{Arch: target.X86, Boot: "warm"}}
	if err := q.checkSnapshotConfig(); err == nil || !strings.Contains(err.Error(), BootSnapshot) {
		t.Fatalf("unknown boot mode: %v", err)
	}
}

func TestPruneSnapshots(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	files := map[string]time.Time{"old.vmstate": now.Add(-30 * 24 * time.Hour), "new.vmstate": now, "other.log": now.Add(-30 * 24 * time.Hour)}
	for name, mtime := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, mtime, mtime)
	}
	pruneSnapshots(dir, now.Add(-snapshotKeep))
	for name, kept := range map[string]bool{"old.vmstate": false, "new.vmstate": true, "other.log": true} {
		if _, err := os.Stat(filepath.Join(dir, name)); (err == nil) != kept {
			t.Errorf("%s: kept = %v, want %v", name, err == nil, kept)
		}
	}
}
