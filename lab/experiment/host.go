package experiment

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	goruntime "runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microfaas/microfaas/lab/report"
)

// Host gathers the facts a run records about its machine. qemu names the
// QEMU binary whose version to record ("" for none); accel is the
// accelerator the QEMU workers use (kvm or tcg).
func Host(ctx context.Context, qemu, accel string) report.HostFacts {
	h := report.HostFacts{CPU: cpuModel(), Cores: goruntime.NumCPU(), GoVersion: goruntime.Version(), Accel: accel}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if qemu != "" {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, qemu, "--version").Output(); err == nil {
			h.QEMU, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
		}
	}
	return h
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return goruntime.GOARCH
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		k = strings.TrimSpace(k)
		if ok && (k == "model name" || k == "Model" || k == "Hardware") {
			return strings.TrimSpace(v)
		}
	}
	return goruntime.GOARCH
}
