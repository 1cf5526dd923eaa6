// Package bootparams is the worker's kernel command line: one type that the
// orchestrator's QEMU controller and mfbuild's SD-card images render, and
// that the worker (runtime, its flasher and debug shell) parses. Every mf.*
// name is defined here and nowhere else (docs/protocol.md).
//
// Values are checked against safe character sets before rendering, so that
// no value (a worker id from a cluster file, say) can end a parameter, add
// one, or rewrite the kernel's ip= option.
package bootparams

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// The worker's parameters.
const (
	ID       = "mf.id"       // worker id, as in the cluster file
	Orch     = "mf.orch"     // orchestrator host:port, or vport:NAME (PortPrefix)
	Off      = "mf.off"      // how to power off: "poweroff" (default) or "reboot" (QEMU -no-reboot)
	Failsafe = "mf.failsafe" // seconds without a word from the orchestrator before powering off
	Iface    = "mf.iface"    // network interface to wait for (default eth0)
	Probe    = "mf.probe"    // 1: print protocol.ProbeMarker and power off (accelerator probe)
	Debug    = "mf.debug"    // 1: a shell on the serial console (mfbuild image --debug)
	// Snapshot 1: boot to the point where only the identity is missing,
	// print protocol.SnapshotReadyMarker and wait for the identity on the
	// console (QEMU snapshot boots: docs/performance.md). mf.id and mf.orch
	// are then absent: the worker learns them after the restore, so a
	// snapshot names neither a worker nor an orchestrator port.
	Snapshot = "mf.snapshot"

	FlashOn     = "mf.flash"        // 1: run the flasher instead of the worker
	FlashSrc    = "mf.flash.src"    // block device holding the image (the SD card's partition 2)
	FlashDst    = "mf.flash.dst"    // block device to write (the eMMC)
	FlashSize   = "mf.flash.size"   // bytes of the image
	FlashSHA256 = "mf.flash.sha256" // its SHA-256, hex

	// IP is the kernel's own network configuration (Documentation/admin-guide/nfs/nfsroot.rst).
	IP = "ip"
)

// PortPrefix in mf.orch names a virtio-serial port instead of a host:port:
// mf.orch=vport:org.microfaas.0. A QEMU worker on user networking runs its
// session over that port (power.SessionPort): no TCP connection through
// slirp, no relay process to fork (docs/security.md).
const PortPrefix = "vport:"

// Power-off modes.
const (
	PowerOff = "poweroff"
	Reboot   = "reboot"
)

// Errors, for errors.Is.
var (
	// ErrInvalid: a value is malformed or has characters it must not have.
	ErrInvalid = errors.New("invalid boot parameter")
	// ErrMissing: a parameter the worker needs is not there.
	ErrMissing = errors.New("missing boot parameter")
)

// Params is a worker's kernel command line.
type Params struct {
	// Kernel are the kernel's own parameters (console=ttyS0, quiet,
	// panic=-1, ...), rendered first, in order. Parse keeps the ones that are
	// safe to render again and drops the others (e.g. quoted values).
	Kernel []string
	// Net is the kernel's static IP configuration (ip=); nil: none.
	Net *Net

	ID       string        // the worker id: ValidID
	Orch     string        // orchestrator host:port
	Off      string        // PowerOff, Reboot, or "" (the worker's default)
	Failsafe time.Duration // whole seconds; 0: the worker's default
	Iface    string        // "": the worker's default
	Probe    bool
	Debug    bool
	Snapshot bool   // wait for the identity on the console (Snapshot)
	Flash    *Flash // nil: no flasher
}

// Net is the kernel's ip=CLIENT::GATEWAY:NETMASK:HOSTNAME:DEVICE:off.
type Net struct {
	IP, Gateway netip.Addr // IPv4
	Bits        int        // prefix length of the subnet
	Hostname    string     // ValidID
	Device      string     // e.g. eth0
}

// Flash is what the flasher copies where.
type Flash struct {
	Src, Dst string // block devices under /dev
	Size     int64
	SHA256   []byte
}

// The character sets of the values. Plain loops, not regular expressions:
// a counted repetition like {1,253} compiles into a program of hundreds of
// instructions, and compiling them at every worker's start cost ~9 ms of
// its boot under TCG (GODEBUG=inittrace=1).
type charset struct {
	first, rest string // the characters allowed first and after; ranges a-z as "a-z"
	min, max    int
}

var (
	idChars     = charset{"a-z0-9", "a-z0-9-", 1, 32}
	ifaceChars  = charset{"a-z", "a-z0-9", 1, 15}
	hostChars   = charset{"A-Za-z0-9.-", "A-Za-z0-9.-", 1, 253}
	deviceChars = charset{"A-Za-z0-9/_-", "A-Za-z0-9/_-", 1, 64} // after /dev/
	// portChars: a virtio-serial port's name (QEMU's virtserialport
	// name=, the guest's /sys/class/virtio-ports/*/name). No ',' (QEMU's
	// option separator), ':' or '/' (it is looked up as a file's content,
	// never a path).
	portChars = charset{"a-z0-9", "a-z0-9.-", 1, 63}
)

// match reports whether s is min to max characters of the set.
func (c charset) match(s string) bool {
	if len(s) < c.min || len(s) > c.max {
		return false
	}
	for i := 0; i < len(s); i++ {
		set := c.rest
		if i == 0 {
			set = c.first
		}
		if !inSet(s[i], set) {
			return false
		}
	}
	return true
}

// inSet reports whether b is in set, whose "x-y" parts are ranges (a '-'
// that ends the set is itself).
func inSet(b byte, set string) bool {
	for i := 0; i < len(set); i++ {
		if i+2 < len(set) && set[i+1] == '-' {
			if set[i] <= b && b <= set[i+2] {
				return true
			}
			i += 2
			continue
		}
		if set[i] == b {
			return true
		}
	}
	return false
}

// matchDevice checks a block device path: /dev/ and 1-64 characters.
func matchDevice(s string) bool {
	rest, ok := strings.CutPrefix(s, "/dev/")
	return ok && deviceChars.match(rest)
}

// ValidID checks a worker id: lower-case letters, digits and '-', starting
// with a letter or digit, at most 32 characters. It is rendered into mf.id
// and into ip='s hostname, so it must not hold ':', '=', spaces or newlines.
func ValidID(id string) error {
	if !idChars.match(id) {
		return fmt.Errorf("%w: worker id %q: use 1-32 of a-z, 0-9 and '-', starting with a letter or digit", ErrInvalid, id)
	}
	return nil
}

// ValidKernel checks one of the kernel's own parameters: printable, no
// space or quote, and not one that has a field of its own.
func ValidKernel(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty kernel parameter", ErrInvalid)
	}
	for _, r := range p {
		if r <= ' ' || r > '~' || r == '"' {
			return fmt.Errorf("%w: kernel parameter %q: use printable ASCII without spaces or quotes", ErrInvalid, p)
		}
	}
	k, _, _ := strings.Cut(p, "=")
	if k == IP || strings.HasPrefix(k, "mf.") {
		return fmt.Errorf("%w: kernel parameter %q: %s is set through its own field, not as a kernel parameter", ErrInvalid, p, k)
	}
	return nil
}

// Validate checks every field; Render and Parse call it.
func (p Params) Validate() error {
	var errs []error
	bad := func(name, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalid, name, fmt.Sprintf(format, a...)))
	}
	for _, k := range p.Kernel {
		if err := ValidKernel(k); err != nil {
			errs = append(errs, err)
		}
	}
	if p.Net != nil {
		n := p.Net
		if !n.IP.Is4() {
			bad(IP, "client address %v: want IPv4", n.IP)
		}
		if n.Gateway.IsValid() && !n.Gateway.Is4() {
			bad(IP, "gateway %v: want IPv4", n.Gateway)
		}
		if n.Bits < 1 || n.Bits > 32 {
			bad(IP, "prefix length %d: want 1-32", n.Bits)
		}
		if err := ValidID(n.Hostname); err != nil {
			errs = append(errs, fmt.Errorf("%s hostname: %w", IP, err))
		}
		if !ifaceChars.match(n.Device) {
			bad(IP, "device %q: want an interface name like eth0", n.Device)
		}
	}
	if p.ID != "" {
		if err := ValidID(p.ID); err != nil {
			errs = append(errs, err)
		}
	}
	if p.Orch != "" {
		if err := validOrch(p.Orch); err != nil {
			bad(Orch, "%q: %v", p.Orch, err)
		}
	}
	if p.Off != "" && p.Off != PowerOff && p.Off != Reboot {
		bad(Off, "%q: want %s or %s", p.Off, PowerOff, Reboot)
	}
	if p.Failsafe < 0 || p.Failsafe%time.Second != 0 {
		bad(Failsafe, "%v: want a positive whole number of seconds", p.Failsafe)
	}
	if p.Iface != "" && !ifaceChars.match(p.Iface) {
		bad(Iface, "%q: want an interface name like eth0", p.Iface)
	}
	if f := p.Flash; f != nil {
		for _, d := range []struct{ name, v string }{{FlashSrc, f.Src}, {FlashDst, f.Dst}} {
			if !matchDevice(d.v) {
				bad(d.name, "%q: want a block device under /dev", d.v)
			}
		}
		if f.Src == f.Dst {
			bad(FlashDst, "%s and %s are the same device %s", FlashSrc, FlashDst, f.Src)
		}
		if f.Size <= 0 {
			bad(FlashSize, "%d: want a positive number of bytes", f.Size)
		}
		if len(f.SHA256) != sha256.Size {
			bad(FlashSHA256, "want %d bytes, got %d", sha256.Size, len(f.SHA256))
		}
	}
	return errors.Join(errs...)
}

// ValidOrch checks an orchestrator address (mf.orch): an IP address or a
// host name, and a port; or vport: and a port name (PortName).
func ValidOrch(s string) error {
	if err := validOrch(s); err != nil {
		return fmt.Errorf("%w: %s %q: %v", ErrInvalid, Orch, s, err)
	}
	return nil
}

// PortName is the virtio-serial port name of an mf.orch of the form
// vport:NAME, and whether it has that form (it may still be invalid:
// ValidOrch).
func PortName(orch string) (string, bool) {
	return strings.CutPrefix(orch, PortPrefix)
}

// ValidPortName checks a virtio-serial port name: 1-63 of a-z, 0-9, '.'
// and '-', starting with a letter or digit.
func ValidPortName(name string) error {
	if !portChars.match(name) {
		return fmt.Errorf("%w: port name %q: use 1-63 of a-z, 0-9, '.' and '-', starting with a letter or digit", ErrInvalid, name)
	}
	return nil
}

func validOrch(s string) error {
	if name, ok := PortName(s); ok {
		if !portChars.match(name) {
			return fmt.Errorf("port name %q: use 1-63 of a-z, 0-9, '.' and '-', starting with a letter or digit", name)
		}
		return nil
	}
	return validHostPort(s)
}

func validHostPort(s string) error {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 || ap.Addr().Zone() != "" {
			return errors.New("want an address without zone and a port 1-65535")
		}
		return nil
	}
	host, port, err := splitHostPort(s)
	if err != nil {
		return err
	}
	if !hostChars.match(host) {
		return errors.New("host: use an IP address or a name of letters, digits, '.' and '-'")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
		return errors.New("port: want 1-65535")
	}
	return nil
}

func splitHostPort(s string) (host, port string, err error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", errors.New("want host:port")
	}
	return s[:i], s[i+1:], nil
}

// Render validates p and returns the command line.
func (p Params) Render() (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	parts := append([]string(nil), p.Kernel...)
	if n := p.Net; n != nil {
		gw := ""
		if n.Gateway.IsValid() {
			gw = n.Gateway.String()
		}
		parts = append(parts, fmt.Sprintf("%s=%s::%s:%s:%s:%s:off", IP, n.IP, gw, Netmask(n.Bits), n.Hostname, n.Device))
	}
	add := func(k, v string) { parts = append(parts, k+"="+v) }
	if p.ID != "" {
		add(ID, p.ID)
	}
	if p.Orch != "" {
		add(Orch, p.Orch)
	}
	if p.Off != "" {
		add(Off, p.Off)
	}
	if p.Failsafe > 0 {
		add(Failsafe, strconv.FormatInt(int64(p.Failsafe/time.Second), 10))
	}
	if p.Iface != "" {
		add(Iface, p.Iface)
	}
	if p.Probe {
		add(Probe, "1")
	}
	if p.Debug {
		add(Debug, "1")
	}
	if p.Snapshot {
		add(Snapshot, "1")
	}
	if f := p.Flash; f != nil {
		add(FlashOn, "1")
		add(FlashSrc, f.Src)
		add(FlashDst, f.Dst)
		add(FlashSize, strconv.FormatInt(f.Size, 10))
		add(FlashSHA256, hex.EncodeToString(f.SHA256))
	}
	return strings.Join(parts, " "), nil
}

// Netmask is the dotted IPv4 netmask of a prefix length.
func Netmask(bits int) string {
	m := uint32(0xffffffff) << (32 - bits)
	return fmt.Sprintf("%d.%d.%d.%d", m>>24, m>>16&0xff, m>>8&0xff, m&0xff)
}

// maskBits is the prefix length of a dotted netmask, or -1.
func maskBits(s string) int {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return -1
	}
	b := a.As4()
	m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n := bits.LeadingZeros32(^m)
	if n == 0 || m != ^uint32(0)<<(32-n) {
		return -1 // no bits, or not contiguous
	}
	return n
}

// Parse reads a kernel command line (/proc/cmdline). Every mf.* parameter
// and ip= must be well-formed and given once; an unknown mf.* name is an
// error (a typo, or an image newer than its worker). The kernel's other
// parameters are kept in Kernel when they are safe to render.
func Parse(cmdline string) (Params, error) {
	var p Params
	var errs []error
	bad := func(k, v, want string) {
		errs = append(errs, fmt.Errorf("%w: %s=%q: %s", ErrInvalid, k, v, want))
	}
	seen := map[string]bool{}
	var flash Flash
	flashOn := false
	for _, f := range strings.Fields(cmdline) {
		k, v, hasValue := strings.Cut(f, "=")
		if k != IP && !strings.HasPrefix(k, "mf.") {
			if ValidKernel(f) == nil {
				p.Kernel = append(p.Kernel, f)
			}
			continue
		}
		if seen[k] {
			errs = append(errs, fmt.Errorf("%w: %s given twice", ErrInvalid, k))
			continue
		}
		seen[k] = true
		if !hasValue {
			bad(k, "", "want "+k+"=VALUE")
			continue
		}
		switch k {
		case IP:
			n, err := parseNet(v)
			if err != nil {
				bad(k, v, err.Error())
			}
			p.Net = n
		case ID:
			p.ID = v
		case Orch:
			p.Orch = v
		case Off:
			p.Off = v
		case Failsafe:
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil || n <= 0 {
				bad(k, v, "want a positive number of seconds")
			}
			p.Failsafe = time.Duration(n) * time.Second
		case Iface:
			p.Iface = v
		case Probe, Debug, Snapshot, FlashOn:
			if v != "0" && v != "1" {
				bad(k, v, "want 0 or 1")
			}
			switch k {
			case Probe:
				p.Probe = v == "1"
			case Debug:
				p.Debug = v == "1"
			case Snapshot:
				p.Snapshot = v == "1"
			default:
				flashOn = v == "1"
			}
		case FlashSrc:
			flash.Src = v
		case FlashDst:
			flash.Dst = v
		case FlashSize:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				bad(k, v, "want a positive number of bytes")
			}
			flash.Size = n
		case FlashSHA256:
			s, err := hex.DecodeString(v)
			if err != nil || len(s) != sha256.Size {
				bad(k, v, "want 64 hex digits")
			}
			flash.SHA256 = s
		default:
			errs = append(errs, fmt.Errorf("%w: unknown worker parameter %s", ErrInvalid, k))
		}
	}
	if flashOn {
		for _, k := range []string{FlashSrc, FlashDst, FlashSize, FlashSHA256} {
			if !seen[k] {
				errs = append(errs, fmt.Errorf("%w: %s=1 without %s=", ErrMissing, FlashOn, k))
			}
		}
		p.Flash = &flash
	}
	if err := errors.Join(errs...); err != nil {
		return p, err
	}
	return p, p.Validate()
}

// parseNet reads our form of ip=: CLIENT::GATEWAY:NETMASK:HOSTNAME:DEVICE:off.
func parseNet(v string) (*Net, error) {
	f := strings.Split(v, ":")
	if len(f) != 7 || f[1] != "" || f[6] != "off" {
		return nil, errors.New("want CLIENT::GATEWAY:NETMASK:HOSTNAME:DEVICE:off")
	}
	n := &Net{Hostname: f[4], Device: f[5]}
	var err error
	if n.IP, err = netip.ParseAddr(f[0]); err != nil {
		return nil, fmt.Errorf("client address: %w", err)
	}
	if f[2] != "" {
		if n.Gateway, err = netip.ParseAddr(f[2]); err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
	}
	if n.Bits = maskBits(f[3]); n.Bits < 0 {
		return nil, fmt.Errorf("netmask %q: want a dotted netmask like 255.255.255.0", f[3])
	}
	return n, nil
}
