package power

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
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
	// On user networking the whole qemu command line is shared too (no
	// per-worker MAC): one snapshot serves every local worker.
	a0, err0 := q.snapshotArgs(c.Workers[0])
	a1, err1 := q.snapshotArgs(c.Workers[1])
	if err0 != nil || err1 != nil || !slices.Equal(a0, a1) {
		t.Fatalf("user-networking workers got different snapshot arguments:\n%v\n%v", a0, a1)
	}
	// A tap worker keeps its MAC (and has its own IP in ip=).
	tap := c.Workers[0]
	tap.VM.Net, tap.VM.Tap = "tap", "tap0"
	at, err := q.snapshotArgs(tap)
	if err != nil || !strings.Contains(strings.Join(at, " "), "mac="+tap.MAC) {
		t.Fatalf("tap worker's snapshot arguments lack its MAC: %v, %v", at, err)
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

// A PowerOff while a snapshot boot is still being prepared (here: a qemu
// that never gets ready, so saving the snapshot waits) cancels the start:
// PowerOn returns an error, no VM is left running, and a second PowerOn in
// the meantime is refused rather than starting a second VM.
func TestPowerOffWhileStarting(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "qemu-system-x86_64")
	script := "#!/bin/sh\ncase \"$1\" in --version) echo 'QEMU emulator version 0 (fake)'; exit 0;; esac\nexec sleep 60\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	kernel, initrd := filepath.Join(dir, "bzImage"), filepath.Join(dir, "initramfs.cpio")
	os.WriteFile(kernel, []byte("k"), 0o644)
	os.WriteFile(initrd, []byte("i"), 0o644)
	tg := *target.X86
	tg.QEMU.Binary = fake
	c := cluster.Local(1)
	c.Network.Port = 7000
	q, err := NewQEMU(context.Background(), QEMUConfig{Arch: &tg, Kernel: kernel, Initrd: initrd, Accel: "tcg",
		Cluster: c, LogDir: dir, Boot: BootSnapshot, SnapshotDir: filepath.Join(dir, "snaps")})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	w := c.Workers[0]
	first := make(chan error, 1)
	go func() { first <- q.PowerOn(context.Background(), w) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		q.mu.Lock()
		starting := q.starting[w.ID] != nil
		q.mu.Unlock()
		if starting {
			break
		}
		select {
		case err := <-first:
			t.Fatalf("PowerOn returned before saving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("PowerOn never reserved the worker")
		}
	}
	if err := q.PowerOn(context.Background(), w); err == nil || !strings.Contains(err.Error(), "already powered on") {
		t.Fatalf("second PowerOn while starting: %v", err)
	}
	if err := q.PowerOff(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-first:
		if err == nil {
			t.Fatal("PowerOn succeeded after a PowerOff cancelled it")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("PowerOn did not return after PowerOff")
	}
	if q.Running(w.ID) {
		t.Fatal("a VM is running after PowerOff")
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "snaps", "*")); len(files) != 0 {
		t.Fatalf("a cancelled save left files: %v", files)
	}
}
