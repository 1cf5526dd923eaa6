package bootparams

import (
	"errors"
	"net/netip"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

var sum = make([]byte, 32)

func net4(ip, gw string, bits int, host string) *Net {
	return &Net{IP: netip.MustParseAddr(ip), Gateway: netip.MustParseAddr(gw), Bits: bits, Hostname: host, Device: "eth0"}
}

// Each case renders to the exact command line and parses back to itself.
func TestRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name string
		p    Params
		want string
	}{
		{"qemu worker", Params{
			Kernel: []string{"console=ttyS0", "reboot=t", "panic=-1", "quiet"},
			Net:    net4("10.0.2.15", "10.0.2.2", 24, "vm0"),
			ID:     "vm0", Orch: "10.0.2.2:63302", Off: Reboot, Failsafe: 30 * time.Second,
		}, "console=ttyS0 reboot=t panic=-1 quiet ip=10.0.2.15::10.0.2.2:255.255.255.0:vm0:eth0:off mf.id=vm0 mf.orch=10.0.2.2:63302 mf.off=reboot mf.failsafe=30"},
		{"bbb debug", Params{
			Kernel: []string{"console=ttyS0,115200n8"},
			Net:    net4("192.168.1.10", "192.168.1.1", 20, "bbb-0"),
			ID:     "bbb-0", Orch: "192.168.1.2:63302", Off: PowerOff, Iface: "eth1", Debug: true,
		}, "console=ttyS0,115200n8 ip=192.168.1.10::192.168.1.1:255.255.240.0:bbb-0:eth0:off mf.id=bbb-0 mf.orch=192.168.1.2:63302 mf.off=poweroff mf.iface=eth1 mf.debug=1"},
		{"flasher", Params{
			Kernel: []string{"console=ttyS0,115200n8"}, ID: "bbb0", Off: PowerOff,
			Flash: &Flash{Src: "/dev/mmcblk0p2", Dst: "/dev/mmcblk1", Size: 4096, SHA256: sum},
		}, "console=ttyS0,115200n8 mf.id=bbb0 mf.off=poweroff mf.flash=1 mf.flash.src=/dev/mmcblk0p2 mf.flash.dst=/dev/mmcblk1 mf.flash.size=4096 mf.flash.sha256=" + strings.Repeat("00", 32)},
		{"snapshot: no id or orchestrator, waits for them on the console", Params{
			Kernel: []string{"console=ttyS0"}, Net: net4("10.0.2.15", "10.0.2.2", 24, "worker"),
			Off: Reboot, Snapshot: true,
		}, "console=ttyS0 ip=10.0.2.15::10.0.2.2:255.255.255.0:worker:eth0:off mf.off=reboot mf.snapshot=1"},
		{"probe", Params{Kernel: []string{"console=ttyS0"}, Probe: true, Off: Reboot}, "console=ttyS0 mf.off=reboot mf.probe=1"},
		{"orchestrator by name", Params{ID: "a", Orch: "orch.lan:1"}, "mf.id=a mf.orch=orch.lan:1"},
		{"orchestrator over a virtio-serial port", Params{ID: "vm0", Orch: "vport:org.microfaas.0", Off: Reboot},
			"mf.id=vm0 mf.orch=vport:org.microfaas.0 mf.off=reboot"},
		{"empty", Params{}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.p.Render()
			if err != nil || got != tt.want {
				t.Fatalf("Render = %q, %v\nwant %q", got, err, tt.want)
			}
			back, err := Parse(got)
			if err != nil {
				t.Fatalf("Parse(%q): %v", got, err)
			}
			if !reflect.DeepEqual(back, tt.p) {
				t.Fatalf("Parse(Render(p)) = %+v\nwant %+v", back, tt.p)
			}
		})
	}
}

// A worker id (or any value) that could end a parameter, add one or rewrite
// ip= is refused before anything is rendered.
func TestRenderRefusesInjection(t *testing.T) {
	ok := Params{Net: net4("10.0.0.5", "10.0.0.1", 24, "w1"), ID: "w1", Orch: "10.0.0.1:1"}
	for _, tt := range []struct {
		name string
		edit func(p *Params)
	}{
		{"id with colon rewrites ip=", func(p *Params) { p.ID = "w1:10.0.0.9"; p.Net.Hostname = p.ID }},
		{"hostname with colon", func(p *Params) { p.Net.Hostname = "x:eth1:on" }},
		{"id with newline", func(p *Params) { p.ID = "w1\nmf.orch=6.6.6.6:1" }},
		{"id with space adds a parameter", func(p *Params) { p.ID = "w1 init=/bin/sh" }},
		{"id with equals", func(p *Params) { p.ID = "w=1" }},
		{"upper case id", func(p *Params) { p.ID = "W1" }},
		{"id starting with dash", func(p *Params) { p.ID = "-w" }},
		{"id of 33 characters", func(p *Params) { p.ID = strings.Repeat("a", 33) }},
		{"orch with space", func(p *Params) { p.Orch = "10.0.0.1:1 mf.off=reboot" }},
		{"orch with quote", func(p *Params) { p.Orch = `"x:1` }},
		{"orch without port", func(p *Params) { p.Orch = "10.0.0.1" }},
		{"orch with zone", func(p *Params) { p.Orch = "[fe80::1%eth0]:1" }},
		{"port without name", func(p *Params) { p.Orch = "vport:" }},
		{"port name with slash", func(p *Params) { p.Orch = "vport:../../dev/mem" }},
		{"port name with comma (a QEMU option)", func(p *Params) { p.Orch = "vport:a,chardev=x" }},
		{"port name with colon", func(p *Params) { p.Orch = "vport:a:1" }},
		{"port name upper case", func(p *Params) { p.Orch = "vport:Org" }},
		{"port name starting with a dot", func(p *Params) { p.Orch = "vport:.a" }},
		{"port name of 64 characters", func(p *Params) { p.Orch = "vport:" + strings.Repeat("a", 64) }},
		{"kernel parameter with space", func(p *Params) { p.Kernel = []string{"console=ttyS0 init=/bin/sh"} }},
		{"kernel parameter setting mf.id", func(p *Params) { p.Kernel = []string{"mf.id=other"} }},
		{"kernel parameter setting ip=", func(p *Params) { p.Kernel = []string{"ip=dhcp"} }},
		{"kernel parameter with quote", func(p *Params) { p.Kernel = []string{`x="a`} }},
		{"iface with colon", func(p *Params) { p.Iface = "eth0:1" }},
		{"bad off", func(p *Params) { p.Off = "halt" }},
		{"sub-second failsafe", func(p *Params) { p.Failsafe = 1500 * time.Millisecond }},
		{"IPv6 client", func(p *Params) { p.Net.IP = netip.MustParseAddr("::1") }},
		{"prefix 0", func(p *Params) { p.Net.Bits = 0 }},
		{"flash device outside /dev", func(p *Params) { p.Flash = &Flash{Src: "/etc/shadow", Dst: "/dev/mmcblk1", Size: 1, SHA256: sum} }},
		{"flash same device", func(p *Params) { p.Flash = &Flash{Src: "/dev/a", Dst: "/dev/a", Size: 1, SHA256: sum} }},
		{"flash short sum", func(p *Params) { p.Flash = &Flash{Src: "/dev/a", Dst: "/dev/b", Size: 1, SHA256: []byte{1}} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := ok
			n := *ok.Net
			p.Net = &n
			tt.edit(&p)
			if s, err := p.Render(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Render = %q, %v; want ErrInvalid", s, err)
			}
		})
	}
	if _, err := ok.Render(); err != nil {
		t.Fatalf("the unedited params: %v", err)
	}
}

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		want     Params
		err      error
	}{
		{"other kernel parameters kept", "BOOT_IMAGE=/z console=ttyS0 quiet mf.id=a", Params{Kernel: []string{"BOOT_IMAGE=/z", "console=ttyS0", "quiet"}, ID: "a"}, nil},
		{"unsafe kernel parameters dropped", `x="a b" console=ttyS0`, Params{Kernel: []string{"console=ttyS0"}}, nil},
		{"duplicate id", "mf.id=a mf.id=b", Params{}, ErrInvalid},
		{"duplicate ip", "ip=10.0.0.2::10.0.0.1:255.0.0.0:a:eth0:off ip=10.0.0.3::10.0.0.1:255.0.0.0:a:eth0:off", Params{}, ErrInvalid},
		{"ip with 8 fields", "ip=10.0.0.2::10.0.0.1:255.0.0.0:a:b:eth0:off", Params{}, ErrInvalid},
		{"ip dhcp", "ip=dhcp", Params{}, ErrInvalid},
		{"non-contiguous netmask", "ip=10.0.0.2::10.0.0.1:255.0.255.0:a:eth0:off", Params{}, ErrInvalid},
		{"bad id", "mf.id=A:B", Params{}, ErrInvalid},
		// Workers have their own keys, never the cluster secret on the
		// command line (docs/protocol.md).
		{"the cluster secret is no parameter", "mf.secret=00ff", Params{}, ErrInvalid},
		{"failsafe negative", "mf.failsafe=-3", Params{}, ErrInvalid},
		{"off halt", "mf.off=halt", Params{}, ErrInvalid},
		{"unknown mf parameter", "mf.secrte=00", Params{}, ErrInvalid},
		{"mf parameter without value", "mf.debug", Params{}, ErrInvalid},
		{"debug 0", "mf.debug=0", Params{}, nil},
		{"probe 2", "mf.probe=2", Params{}, ErrInvalid},
		{"flash without its device", "mf.flash=1 mf.flash.dst=/dev/b mf.flash.size=1 mf.flash.sha256=" + strings.Repeat("00", 32), Params{}, ErrMissing},
		{"orchestrator port", "mf.orch=vport:org.microfaas.0", Params{Orch: "vport:org.microfaas.0"}, nil},
		{"orchestrator port with a space-free injection", "mf.orch=vport:x,name=y", Params{}, ErrInvalid},
		{"flash bad sum", "mf.flash=1 mf.flash.src=/dev/a mf.flash.dst=/dev/b mf.flash.size=1 mf.flash.sha256=00", Params{}, ErrInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("Parse(%q) error %v, want %v", tt.in, err, tt.err)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestPortName(t *testing.T) {
	for _, tt := range []struct {
		orch, name string
		port, ok   bool // a port form; a valid one
	}{
		{"vport:org.microfaas.0", "org.microfaas.0", true, true},
		{"vport:a", "a", true, true},
		{"vport:" + strings.Repeat("a", 63), strings.Repeat("a", 63), true, true},
		{"vport:", "", true, false},
		{"vport:a_b", "a_b", true, false},
		{"10.0.2.2:63302", "", false, true},
		{"orch.lan:1", "", false, true},
	} {
		name, port := PortName(tt.orch)
		if port != tt.port || (port && name != tt.name) {
			t.Errorf("PortName(%q) = %q, %v; want %q, %v", tt.orch, name, port, tt.name, tt.port)
		}
		if err := ValidOrch(tt.orch); (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("ValidOrch(%q) = %v, want ok %v", tt.orch, err, tt.ok)
		}
		if port {
			if err := ValidPortName(name); (err == nil) != tt.ok {
				t.Errorf("ValidPortName(%q) = %v, want ok %v", name, err, tt.ok)
			}
		}
	}
}

func TestValidID(t *testing.T) {
	for _, id := range []string{"a", "vm0", "bbb-12", "0", strings.Repeat("a", 32)} {
		if err := ValidID(id); err != nil {
			t.Errorf("ValidID(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", "-a", "a_b", "a.b", "a:b", "a b", "a\n", "Ä", strings.Repeat("a", 33)} {
		if err := ValidID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidID(%q) = %v, want ErrInvalid", id, err)
		}
	}
}

// FuzzBootParams: whatever Parse accepts renders and parses back to the same
// Params; and an arbitrary worker id either is refused or appears only as
// mf.id and ip='s hostname, never changing another parameter.
func FuzzBootParams(f *testing.F) {
	f.Add("console=ttyS0 ip=10.0.2.15::10.0.2.2:255.255.255.0:vm0:eth0:off mf.id=vm0 mf.orch=10.0.2.2:63302 mf.off=reboot", "vm0")
	f.Add("mf.flash=1 mf.flash.src=/dev/a mf.flash.dst=/dev/b mf.flash.size=9 mf.flash.sha256="+strings.Repeat("ab", 32), "w:1")
	f.Add("mf.id=a mf.id=b", "a\nmf.orch=1.2.3.4:5")
	f.Add("mf.id=vm0 mf.orch=vport:org.microfaas.0 mf.off=reboot", "vm0")
	f.Add("mf.orch=vport:a/../b", "vport:1")
	f.Fuzz(func(t *testing.T, cmdline, id string) {
		if p, err := Parse(cmdline); err == nil {
			s, err := p.Render()
			if err != nil {
				t.Fatalf("Parse(%q) accepted what Render refuses: %v", cmdline, err)
			}
			back, err := Parse(s)
			if err != nil || !reflect.DeepEqual(back, p) {
				t.Fatalf("round trip of %q via %q: %+v, %v; want %+v", cmdline, s, back, err, p)
			}
		}
		p := Params{Kernel: []string{"console=ttyS0"}, Net: net4("10.0.0.5", "10.0.0.1", 24, id), ID: id, Orch: "10.0.0.1:7", Off: Reboot}
		s, err := p.Render()
		if err != nil {
			return
		}
		back, err := Parse(s)
		if err != nil || !reflect.DeepEqual(back, p) {
			t.Fatalf("id %q rendered %q, parsed %+v, %v", id, s, back, err)
		}
	})
}

// The hand-written character checks accept and refuse what the regular
// expressions they replace did.
func TestCharsetsMatchTheirRegexps(t *testing.T) {
	for _, c := range []struct {
		match func(string) bool
		re    *regexp.Regexp
	}{
		{idChars.match, regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)},
		{ifaceChars.match, regexp.MustCompile(`^[a-z][a-z0-9]{0,14}$`)},
		{hostChars.match, regexp.MustCompile(`^[A-Za-z0-9.-]{1,253}$`)},
		{matchDevice, regexp.MustCompile(`^/dev/[A-Za-z0-9/_-]{1,64}$`)},
		{portChars.match, regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)},
	} {
		inputs := []string{"", "a", "-a", "a-", "A", "0", "vm0", "eth0", "eth", "0eth", "bbb-0", "x:1", "a b", "a\n",
			"/dev/mmcblk0p2", "/dev/", "/devx", "/dev/a_b/c-d", "/dev/a.b", "orch.lan", "10.0.2.2", "é", "a=b",
			strings.Repeat("a", 15), strings.Repeat("a", 16), strings.Repeat("a", 32), strings.Repeat("a", 33),
			strings.Repeat("a", 253), strings.Repeat("a", 254), "/dev/" + strings.Repeat("b", 64), "/dev/" + strings.Repeat("b", 65),
			"org.microfaas.0", ".a", strings.Repeat("a", 63), strings.Repeat("a", 64)}
		for _, in := range inputs {
			if got, want := c.match(in), c.re.MatchString(in); got != want {
				t.Errorf("%s: %q matched %v, want %v", c.re, in, got, want)
			}
		}
	}
}
