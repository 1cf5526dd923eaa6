package power

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/qemurelay"
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

// netdevOf returns the -netdev value in args.
func netdevOf(t *testing.T, args []string) string {
	t.Helper()
	i := slices.Index(args, "-netdev")
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("no -netdev in %v", args)
	}
	return args[i+1]
}

// TestUserNetworkRestricted: issue 18, attack 4 (network half). A user-
// networking worker's netdev is restrict=on (no route to the host's
// loopback or anywhere else) with one guestfwd per endpoint it needs: the
// worker port, relayed from the worker's own loopback address, and each
// service the cluster names at the host's address; nothing else. A
// snapshot's saved VM has no forward (and so no port: one snapshot serves
// any), a tap worker is left as it was.
// TestUserNetworkOrchestratorElsewhere: a cluster whose orchestrator is on
// a LAN (a BeagleBone cluster's, as the flasher test boots) gets no
// forwards, since QEMU refuses guestfwd outside its network, and is told.
func TestUserNetworkOrchestratorElsewhere(t *testing.T) {
	c := cluster.Local(1)
	c.Network.Orchestrator, c.Network.Port = "192.168.1.2", 63302
	c.Services = map[string]map[string]string{"redis": {"addr": "192.168.1.2:6379"}}
	fwds, far := forwards(c, c.Workers[0], false)
	if len(fwds) != 0 {
		t.Errorf("forwards %v, want none outside 10.0.2.0/24", fwds)
	}
	if !slices.Equal(far, []string{"192.168.1.2:63302"}) {
		t.Errorf("unreachable %v, want the worker port", far)
	}
	q := &QEMU{cfg: QEMUConfig{Arch: target.X86, Cluster: c}, accel: "tcg"}
	if nd := netdevOf(t, q.Args(c.Workers[0], "console=ttyS0")); strings.Contains(nd, "guestfwd") || !strings.Contains(nd, "restrict=on") {
		t.Errorf("netdev %q: want restrict=on and no guestfwd", nd)
	}
}

func TestUserNetworkRestricted(t *testing.T) {
	c := cluster.Local(2)
	c.Network.Port = 7000
	c.Services = map[string]map[string]string{
		"redis":    {"addr": "10.0.2.2:6379", "password": "pw"},
		"postgres": {"host": "10.0.2.2", "user": "postgres"},
		"pg-url":   {"dsn": "postgres://u:p@10.0.2.2:5433/db"},
		"pg-kv":    {"dsn": "host=10.0.2.2 port=5434 user=u"},
		"s3":       {"endpoint": "http://10.0.2.2:9000", "access_key": "a", "secret_key": "s", "bucket": "b"},
		"kafka":    {"brokers": "10.0.2.2:9092,10.0.2.2:9093"},
		"far":      {"addr": "192.168.1.157:6379"},
	}
	q := &QEMU{cfg: QEMUConfig{Arch: target.X86, Cluster: c}, accel: "tcg"}
	w := c.Workers[1]
	nd := netdevOf(t, q.Args(w, "console=ttyS0"))
	for _, want := range []string{"user,id=n0,restrict=on,ipv6=off,host=10.0.2.254,",
		"guestfwd=tcp:10.0.2.2:7000-cmd:", relayArg + " " + RelaySource(1) + " 127.0.0.1:7000 "} {
		if !strings.Contains(nd, want) {
			t.Errorf("netdev %q lacks %q", nd, want)
		}
	}
	var got []string
	for _, part := range strings.Split(nd, ",guestfwd=tcp:")[1:] {
		guest, _, _ := strings.Cut(part, "-cmd:")
		got = append(got, guest)
	}
	want := []string{"10.0.2.2:7000", "10.0.2.2:5432", "10.0.2.2:5433", "10.0.2.2:5434", "10.0.2.2:6379",
		"10.0.2.2:9000", "10.0.2.2:9092", "10.0.2.2:9093"}
	if !slices.Equal(got, want) {
		t.Errorf("forwards %v, want %v (the worker port, then each service at the host; none to 192.168.1.157)", got, want)
	}
	if _, far := forwards(c, w, false); !slices.Equal(far, []string{"192.168.1.157:6379"}) {
		t.Errorf("unreachable endpoints %v", far)
	}

	// A snapshot's saved VM: restricted, no forward, no port.
	snap, err := q.snapshotArgs(w)
	if err != nil {
		t.Fatal(err)
	}
	if nd := netdevOf(t, snap); nd != "user,id=n0,restrict=on,ipv6=off,host=10.0.2.254" {
		t.Errorf("snapshot netdev %q", nd)
	}
	c2 := *c
	c2.Network.Port = 7001
	q2 := &QEMU{cfg: QEMUConfig{Arch: target.X86, Cluster: &c2}, accel: "tcg"}
	if snap2, _ := q2.snapshotArgs(w); !slices.Equal(snap, snap2) {
		t.Errorf("the saved VM's command line depends on the worker port:\n%v\n%v", snap, snap2)
	}

	// A tap worker: its own device, as before.
	tap := w
	tap.VM.Net, tap.VM.Tap = "tap", "tap3"
	if nd := netdevOf(t, q.Args(tap, "console=ttyS0")); nd != "tap,id=n0,ifname=tap3,script=no,downscript=no" {
		t.Errorf("tap netdev %q", nd)
	}
}

// TestGuestfwdQuoting: the relay's path goes through QEMU's option syntax
// (commas doubled) and g_shell_parse_argv (single quotes).
func TestGuestfwdQuoting(t *testing.T) {
	nd := userNetdev("/opt/my,dir/it's/mforch", "/tmp/k,eys", []guestFwd{{guest: "10.0.2.2:1", target: "127.0.0.1:1", source: "-"}})
	want := `guestfwd=tcp:10.0.2.2:1-cmd:'/opt/my,,dir/it'\''s/mforch' ` + relayArg + ` - 127.0.0.1:1 '/tmp/k,,eys'`
	if !strings.HasSuffix(nd, want) {
		t.Errorf("netdev %q, want it to end in %q", nd, want)
	}
}

// TestRelay runs this test binary as the guestfwd relay, as slirp does
// (the guest's connection on stdin): bytes go both ways, and the target
// sees the connection come from the given loopback address.
func TestRelay(t *testing.T) {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	seen := make(chan string, 1)
	go func() {
		c, err := target.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Fprintf(c, "echo %s", line)
	}()
	// The guest's side: a connected pair, one end the relay's stdin.
	pair, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pair.Close()
	guest, err := net.Dial("tcp", pair.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer guest.Close()
	end, err := pair.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := end.(*net.TCPConn).File()
	end.Close()
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	cmd := exec.Command(exe, relayArg, "127.77.0.9", target.Addr().String(), t.TempDir())
	cmd.Stdin, cmd.Stdout = f, f
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	guest.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(guest, "hello\n")
	guest.(*net.TCPConn).CloseWrite() // the guest is done sending
	got, _ := io.ReadAll(guest)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("relay: %v: %s", err, stderr.String())
	}
	if string(got) != "echo hello\n" {
		t.Errorf("through the relay: %q", got)
	}
	if src := <-seen; src != "127.77.0.9" {
		t.Errorf("the target saw the connection from %s, want the worker's 127.77.0.9", src)
	}
}

// TestRelaySlots: one worker's connections hold at most qemurelay.MaxRelays relay
// processes on the host; a slot comes free when its relay ends.
func TestRelaySlots(t *testing.T) {
	dir := t.TempDir()
	var held []*os.File
	for range qemurelay.MaxRelays {
		f, err := qemurelay.TakeSlot(dir)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, f)
	}
	if _, err := qemurelay.TakeSlot(dir); !errors.Is(err, qemurelay.ErrTooManyRelays) {
		t.Fatalf("relay %d: %v, want ErrTooManyRelays", qemurelay.MaxRelays+1, err)
	}
	held[7].Close()
	f, err := qemurelay.TakeSlot(dir)
	if err != nil {
		t.Fatalf("a freed slot: %v", err)
	}
	f.Close()
	for _, f := range held {
		f.Close()
	}
}

// TestSessionPortArgs: with a session handler registered, an x86 worker
// on user networking gets the virtio-serial port (on qemu's fd 3, or a
// null chardev in a snapshot's saved VM), mf.orch names the port, and
// no rule forwards the worker port any more; the services' rules stay.
// ARM virt workers, tap workers and a controller without a handler keep
// the worker port (through the relay), as does RelayPort.
func TestSessionPortArgs(t *testing.T) {
	c := cluster.Local(1)
	c.Network.Port = 7000
	c.Services = map[string]map[string]string{"redis": {"addr": "10.0.2.2:6379"}}
	portDevs := []string{"-chardev", "socket,fd=3,id=mfs", "-device", "virtio-serial-device,max_ports=2",
		"-device", "virtserialport,chardev=mfs,name=org.microfaas.0"}
	tap := c.Workers[0]
	tap.VM.Net, tap.VM.Tap = "tap", "tap3"
	tests := []struct {
		name    string
		arch    *target.Target
		w       cluster.Worker
		handler bool
		relay   bool
		port    bool
	}{
		{"x86 on user networking", target.X86, c.Workers[0], true, false, true},
		{"no handler", target.X86, c.Workers[0], false, false, false},
		{"relay asked for", target.X86, c.Workers[0], true, true, false},
		{"arm virt", target.ARMv7, c.Workers[0], true, false, false},
		{"tap", target.X86, tap, true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &QEMU{cfg: QEMUConfig{Arch: tt.arch, Cluster: c}, accel: "tcg", relayPort: tt.relay}
			if tt.handler {
				q.OnSession(func(string, net.Conn) {})
			}
			s, err := q.Cmdline(tt.w)
			if err != nil {
				t.Fatal(err)
			}
			p, err := bootparams.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			args := q.Args(tt.w, s)
			i := slices.Index(args, "-chardev")
			hasPort := i >= 0 && slices.Equal(args[i:i+len(portDevs)], portDevs)
			if hasPort != tt.port || (!tt.port && i >= 0) {
				t.Fatalf("port devices %v in %v", tt.port, args)
			}
			wantOrch := "10.0.2.2:7000"
			if tt.port {
				wantOrch = "vport:org.microfaas.0"
			}
			if p.Orch != wantOrch {
				t.Errorf("mf.orch=%s, want %s", p.Orch, wantOrch)
			}
			if tt.w.VM.Net == "tap" {
				return
			}
			nd := netdevOf(t, args)
			if got := strings.Contains(nd, "guestfwd=tcp:10.0.2.2:7000-"); got == tt.port {
				t.Errorf("netdev %q: worker port forwarded %v, want %v", nd, got, !tt.port)
			}
			if !strings.Contains(nd, "guestfwd=tcp:10.0.2.2:6379-") || !strings.Contains(nd, "restrict=on") {
				t.Errorf("netdev %q: want restrict=on and the service's rule", nd)
			}
		})
	}

	// A snapshot's saved VM has the port's devices on a null chardev, with
	// or without a handler (one saved VM serves both), and the restore
	// puts that boot's socket (fd 4, after the saved state) in its place.
	q := &QEMU{cfg: QEMUConfig{Arch: target.X86, Cluster: c}, accel: "tcg"}
	plain, err := q.snapshotArgs(c.Workers[0])
	if err != nil {
		t.Fatal(err)
	}
	q.OnSession(func(string, net.Conn) {})
	snap, _ := q.snapshotArgs(c.Workers[0])
	if !slices.Equal(plain, snap) || !slices.Contains(snap, "null,id=mfs") || !slices.Contains(snap, "virtserialport,chardev=mfs,name=org.microfaas.0") {
		t.Fatalf("snapshot args %v", snap)
	}
	setChardev(snap, socketBackend(4))
	if !slices.Contains(snap, "socket,fd=4,id=mfs") {
		t.Fatalf("restore args %v", snap)
	}
}

// TestKernelLacksPorts: an uncompressed kernel without the virtio-serial
// driver keeps its workers on the relay; one with it, and a compressed
// image (which cannot be told), do not.
func TestKernelLacksPorts(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, content string
		lacks         bool
	}{
		{"vmlinux without the driver", "\x7fELF...no driver here...", true},
		{"vmlinux with the driver", "\x7fELF...virtio-ports...", false},
		{"bzImage", "MZ compressed", false},
	} {
		path := dir + "/" + strings.ReplaceAll(tt.name, " ", "-")
		if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := kernelLacksPorts(path); got != tt.lacks {
			t.Errorf("%s: kernelLacksPorts = %v, want %v", tt.name, got, tt.lacks)
		}
	}
	if kernelLacksPorts(dir + "/missing") {
		t.Error("a missing file lacks ports")
	}
}
