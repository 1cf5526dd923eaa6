package power

import (
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/target"
)

// The command line and QEMU arguments of each target come from the target
// table and bootparams, and parse back on the worker's side.
func TestCmdlinePerTarget(t *testing.T) {
	c := cluster.Local(1)
	c.Network.Port = 7000
	w := c.Workers[0]
	for _, tg := range target.All {
		t.Run(tg.Name, func(t *testing.T) {
			q := &QEMU{cfg: QEMUConfig{Arch: tg, Cluster: c, Failsafe: 30, Cmdline: "loglevel=3"}, accel: "tcg"}
			s, err := q.Cmdline(w)
			if err != nil {
				t.Fatal(err)
			}
			p, err := bootparams.Parse(s)
			if err != nil {
				t.Fatalf("worker side: %v", err)
			}
			if p.ID != w.ID || p.Net.Hostname != w.ID || p.Net.IP.String() != w.IP || p.Orch != "10.0.2.2:7000" ||
				p.Off != bootparams.Reboot || p.Failsafe.Seconds() != 30 {
				t.Fatalf("parsed %+v from %q", p, s)
			}
			// The cluster secret never goes on a command line: the worker's
			// own key travels in a per-boot initramfs (BootInitrd).
			if strings.Contains(s, hex.EncodeToString(c.SecretBytes())) {
				t.Fatalf("the cluster secret is on the command line %q", s)
			}
			if !slices.Contains(p.Kernel, "console="+tg.QEMU.Console) || !slices.Contains(p.Kernel, "loglevel=3") {
				t.Fatalf("kernel params %v", p.Kernel)
			}
			hasTSC := strings.Contains(s, "tsc_early_khz=")
			if hasTSC && !tg.QEMU.TSC {
				t.Fatalf("%s got tsc_early_khz: %q", tg, s)
			}
			args := q.Args(w, s)
			if !slices.Contains(args, tg.QEMU.Machine) || !slices.Contains(args, tg.QEMU.CPUFor("tcg")) {
				t.Fatalf("args %v", args)
			}
			for _, d := range tg.QEMU.Devices {
				if !slices.Contains(args, d) {
					t.Fatalf("args %v lack -device %s", args, d)
				}
			}
		})
	}
}

func TestCmdlineRefusesBadValues(t *testing.T) {
	c := cluster.Local(1)
	q := &QEMU{cfg: QEMUConfig{Arch: target.X86, Cluster: c}, accel: "tcg"}
	w := c.Workers[0]
	w.ID = "vm0:10.0.2.99"
	if s, err := q.Cmdline(w); !errors.Is(err, bootparams.ErrInvalid) {
		t.Fatalf("id with ':' gave %q, %v", s, err)
	}
	q.cfg.Cmdline = "mf.orch=6.6.6.6:1"
	if s, err := q.Cmdline(c.Workers[0]); !errors.Is(err, bootparams.ErrInvalid) {
		t.Fatalf("mf.* through Cmdline gave %q, %v", s, err)
	}
}
