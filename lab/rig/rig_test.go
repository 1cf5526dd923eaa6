package rig

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/energy"
)

// localConfig is a rig of n local QEMU workers that never boot: the image
// files exist but are empty.
func localConfig(t *testing.T, n int) Config {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 missing (make deps)")
	}
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "bzImage"), filepath.Join(dir, "initramfs.cpio")
	for _, f := range []string{kernel, initrd} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Config{Cluster: cluster.Local(n), Kernel: kernel, Initrd: initrd, Accel: "tcg",
		Results: filepath.Join(dir, "out", "results.csv"), ConsoleDir: filepath.Join(dir, "consoles"),
		Log: slog.New(slog.DiscardHandler)}
}

func TestStart(t *testing.T) {
	for _, tc := range []struct {
		name      string
		energyOff bool
		header    []string
	}{
		{"cpu-time model", false, orchestrator.EnergyCSVHeader},
		{"energy off", true, orchestrator.CSVHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := localConfig(t, 2)
			if !tc.energyOff {
				cfg.Energy = &Energy{Model: energy.CPUModel{WattsPerCore: 10}}
			}
			r, err := Start(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			// Workers find the orchestrator at the port it listens on.
			if r.Cluster.Network.Port != r.Addr().(*net.TCPAddr).Port || r.Cluster.Network.Port == 0 {
				t.Errorf("cluster port %d, listener %v", r.Cluster.Network.Port, r.Addr())
			}
			if got := len(r.Orch.Status().Workers); got != 2 {
				t.Errorf("%d workers, want 2", got)
			}
			if r.Accel() != "tcg" {
				t.Errorf("accel %q, want tcg", r.Accel())
			}
			r.Close()
			b, err := os.ReadFile(cfg.Results)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := strings.TrimSpace(string(b)), strings.Join(tc.header, ","); got != want {
				t.Errorf("results header %q, want %q", got, want)
			}
			if r.EnergyResult() != nil && tc.energyOff {
				t.Error("an energy account with energy off")
			}
		})
	}
}

func TestStartFailsCleanly(t *testing.T) {
	if _, err := Start(context.Background(), Config{Results: "r.csv"}); !errors.Is(err, ErrConfig) {
		t.Errorf("no cluster: %v, want ErrConfig", err)
	}
	cfg := localConfig(t, 1)
	if _, err := Start(context.Background(), Config{Cluster: cfg.Cluster}); !errors.Is(err, ErrConfig) {
		t.Errorf("no results file: %v, want ErrConfig", err)
	}
	// A failure after the listener is open releases it: the same
	// address can be listened on again at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg.Listen = addr
	blocker := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocker, nil, 0o644)
	cfg.Results = filepath.Join(blocker, "results.csv") // its folder is a file
	if _, err := Start(context.Background(), cfg); err == nil {
		t.Fatal("results under a file: no error")
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the failed start kept the worker listener: %v", err)
	}
	ln.Close()
}
