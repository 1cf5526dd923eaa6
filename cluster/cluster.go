// Package cluster reads and validates the cluster file: the network, the
// shared secret, the services functions use, and every worker. mfbuild uses
// it to personalise images; mforch to know whom to power and whom to trust.
package cluster

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/target"
)

// Worker kinds.
const (
	KindBBB = "bbb" // BeagleBone Black, powered through a GPIO line on its PWR_BUT
	KindVM  = "vm"  // QEMU microVM on the orchestrator's host
)

// Cluster is a parsed, validated cluster file.
type Cluster struct {
	Network    Network                      `yaml:"network"`
	Secret     string                       `yaml:"secret"`      // hex; or use secret_file
	SecretFile string                       `yaml:"secret_file"` // file holding the hex secret
	Services   map[string]map[string]string `yaml:"services"`
	Workers    []Worker                     `yaml:"workers"`
	// Meter is the power meter, if any (docs/energy.md); its states file
	// is taken relative to the cluster file like secret_file.
	Meter *Meter `yaml:"meter,omitempty"`
	// Policies are the power policies by worker kind (bbb, vm): what a
	// worker does after its job (ParsePolicy; a kind not named: off).
	Policies map[string]string `yaml:"policies,omitempty"`

	// secret is the decoded secret; policies the parsed Policies.
	secret   []byte
	policies map[string]Policy
}

// Policy is the power policy of workers of kind: the cluster file's, else
// off.
func (c *Cluster) Policy(kind string) Policy {
	if p, ok := c.policies[kind]; ok {
		return p
	}
	return Policy{Name: PolicyOff}
}

// Network is the workers' network and where the orchestrator listens.
type Network struct {
	Subnet       string `yaml:"subnet"`       // e.g. 192.168.1.0/24
	Gateway      string `yaml:"gateway"`      // e.g. 192.168.1.1
	Orchestrator string `yaml:"orchestrator"` // address workers dial, e.g. 192.168.1.2
	Port         int    `yaml:"port"`         // worker protocol port (default 63302)
	Listen       string `yaml:"listen"`       // address mforch binds (default all interfaces)
}

// Worker is one worker of the cluster.
type Worker struct {
	ID    string    `yaml:"id"`
	Kind  string    `yaml:"kind"`
	MAC   string    `yaml:"mac"`
	IP    string    `yaml:"ip"`
	Power GPIOPower `yaml:"power"` // kind bbb
	VM    VMConfig  `yaml:"vm"`    // kind vm
}

// GPIOPower is the orchestrator GPIO line wired to the board's PWR_BUT.
type GPIOPower struct {
	Pin  string `yaml:"pin"`  // BeagleBone header name, e.g. P9_12
	Chip string `yaml:"chip"` // or a gpiochip and line
	Line *int   `yaml:"line"`
}

// VMConfig tunes a QEMU worker.
type VMConfig struct {
	Arch     string `yaml:"arch"`      // target.Parse name: x86 (default) or arm
	MemoryMB int    `yaml:"memory_mb"` // default 256
	Net      string `yaml:"net"`       // "user" (default) or "tap"
	Tap      string `yaml:"tap"`       // tap device for Net "tap"
}

// FieldError names the field (and worker, and line when known) a
// validation error is about; Msg says what to fix.
type FieldError struct {
	Worker string // worker id or index, empty for cluster-wide fields
	Field  string
	Line   int // line in the file, 0 if unknown
	Msg    string
}

func (e *FieldError) Error() string {
	s := "cluster file: "
	if e.Line > 0 {
		s += fmt.Sprintf("line %d: ", e.Line)
	}
	if e.Worker != "" {
		s += "worker " + e.Worker + ": "
	}
	return s + e.Field + ": " + e.Msg
}

// Load reads and validates a cluster file.
func Load(path string) (*Cluster, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster file: %w", err)
	}
	c, err := Parse(b, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes a cluster file's YAML; relative secret_file paths are taken
// from dir. Unknown fields are errors, so a typo does not go unnoticed.
func Parse(b []byte, dir string) (*Cluster, error) {
	var c Cluster
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, decodeError(err)
	}
	// A second document would be silently ignored: refuse it.
	var second yaml.Node
	if err := dec.Decode(&second); err != io.EOF {
		line := 0
		if err == nil {
			line = second.Line
		}
		return nil, &FieldError{Field: "---", Line: line, Msg: "a second YAML document: a cluster file is one document; remove the '---' and merge or delete what follows"}
	}
	if c.SecretFile != "" && !filepath.IsAbs(c.SecretFile) {
		c.SecretFile = filepath.Join(dir, c.SecretFile)
	}
	if c.Meter != nil && c.Meter.States != "" && !filepath.IsAbs(c.Meter.States) {
		c.Meter.States = filepath.Join(dir, c.Meter.States)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

var yamlFieldErr = regexp.MustCompile(`^line (\d+): field (\S+) not found in type (\S+)$`)
var yamlLineErr = regexp.MustCompile(`^line (\d+): (.*)$`)

// decodeError turns the YAML decoder's errors into FieldErrors with lines,
// naming the fields that are allowed where an unknown one was found.
func decodeError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return &FieldError{Field: "yaml", Msg: fmt.Sprintf("%v: fix the YAML syntax", err)}
	}
	var errs []error
	for _, m := range te.Errors {
		fe := &FieldError{Field: "yaml", Msg: m}
		if f := yamlFieldErr.FindStringSubmatch(m); f != nil {
			fe.Line, _ = strconv.Atoi(f[1])
			fe.Field = f[2]
			fe.Msg = "unknown field: check its spelling and indentation"
			if known := knownFields[f[3]]; known != "" {
				fe.Msg += " (allowed here: " + known + ")"
			}
		} else if f := yamlLineErr.FindStringSubmatch(m); f != nil {
			fe.Line, _ = strconv.Atoi(f[1])
			fe.Msg = f[2]
		}
		errs = append(errs, fe)
	}
	return errors.Join(errs...)
}

// knownFields maps a Go type name (as the YAML decoder reports it) to its
// YAML field names.
var knownFields = func() map[string]string {
	m := map[string]string{}
	for _, v := range []any{Cluster{}, Network{}, Worker{}, GPIOPower{}, VMConfig{}, Meter{}, CPUModel{}} {
		t := reflect.TypeOf(v)
		var names []string
		for i := 0; i < t.NumField(); i++ {
			if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag != "" && tag != "-" {
				names = append(names, tag)
			}
		}
		m[t.String()] = strings.Join(names, ", ")
	}
	return m
}()

// Local returns the default cluster: n QEMU workers on user networking, an
// orchestrator on loopback, and a fresh random secret.
func Local(n int) *Cluster {
	secret := make([]byte, 32)
	rand.Read(secret)
	c := &Cluster{
		Network: Network{Subnet: "10.0.2.0/24", Gateway: "10.0.2.2", Orchestrator: "10.0.2.2",
			Port: 0, Listen: "127.0.0.1"},
		secret: secret,
	}
	for i := 0; i < n; i++ {
		c.Workers = append(c.Workers, Worker{
			ID: fmt.Sprintf("vm%d", i), Kind: KindVM, IP: "10.0.2.15",
			MAC: fmt.Sprintf("de:ad:be:ef:00:%02x", i),
		})
	}
	return c
}

// SecretBytes is the decoded shared secret.
func (c *Cluster) SecretBytes() []byte { return c.secret }

// SetSecret replaces the secret (tests, mforch flags).
func (c *Cluster) SetSecret(s []byte) { c.secret = s }

// Worker returns the worker with the given id.
func (c *Cluster) Worker(id string) (Worker, bool) {
	for _, w := range c.Workers {
		if w.ID == id {
			return w, true
		}
	}
	return Worker{}, false
}

// Addr is the orchestrator address workers dial.
func (c *Cluster) Addr() string {
	return net.JoinHostPort(c.Network.Orchestrator, fmt.Sprint(c.Network.Port))
}

// UsesUserNet reports whether a worker reaches the orchestrator through
// QEMU's user networking (every worker a VM with net "user").
func (w Worker) UsesUserNet() bool { return w.Kind == KindVM && (w.VM.Net == "" || w.VM.Net == "user") }

// MemoryMB is the VM's memory, with the default applied.
func (v VMConfig) Memory() int {
	if v.MemoryMB > 0 {
		return v.MemoryMB
	}
	return 256
}

// BootParams are the boot parameters worker w gets from the cluster file:
// the kernel's static IP configuration (ip=, hostname the id), its id, the
// orchestrator's address and the secret. Power controllers and image
// writers add the console and power-off mode.
func (c *Cluster) BootParams(w Worker) (bootparams.Params, error) {
	subnet, err := netip.ParsePrefix(c.Network.Subnet)
	if err != nil {
		return bootparams.Params{}, &FieldError{Field: "network.subnet", Msg: err.Error()}
	}
	ip, err := netip.ParseAddr(w.IP)
	if err != nil || !ip.Is4() {
		return bootparams.Params{}, &FieldError{Worker: w.ID, Field: "ip", Msg: fmt.Sprintf("want an IPv4 address, got %q", w.IP)}
	}
	if !subnet.Masked().Contains(ip) {
		return bootparams.Params{}, &FieldError{Worker: w.ID, Field: "ip", Msg: fmt.Sprintf("%s is outside the subnet %s", ip, subnet.Masked())}
	}
	gw, err := netip.ParseAddr(c.Network.Gateway)
	if err != nil {
		return bootparams.Params{}, &FieldError{Field: "network.gateway", Msg: err.Error()}
	}
	return bootparams.Params{
		Net: &bootparams.Net{IP: ip, Gateway: gw, Bits: subnet.Bits(), Hostname: w.ID, Device: "eth0"},
		ID:  w.ID, Orch: c.Addr(),
	}, nil
}

// Target is the VM's architecture, with the default applied. Load has
// checked the name; an unknown one (a Cluster built in code) is X86.
func (v VMConfig) Target() *target.Target {
	if t, err := target.Parse(v.Arch); err == nil {
		return t
	}
	return target.X86
}

func (c *Cluster) validate() error {
	var errs []error
	fe := func(w, f, format string, a ...any) {
		errs = append(errs, &FieldError{Worker: w, Field: f, Msg: fmt.Sprintf(format, a...)})
	}
	// Secret.
	hexSecret := strings.TrimSpace(c.Secret)
	switch {
	case c.Secret != "" && c.SecretFile != "":
		fe("", "secret", "give secret or secret_file, not both")
	case c.SecretFile != "":
		b, err := os.ReadFile(c.SecretFile)
		if err != nil {
			fe("", "secret_file", "%v", err)
		}
		hexSecret = strings.TrimSpace(string(b))
	}
	if hexSecret == "" {
		fe("", "secret", "missing: generate one with `openssl rand -hex 32` and put it in secret_file")
	} else if s, err := hex.DecodeString(hexSecret); err != nil {
		fe("", "secret", "not hex: %v", err)
	} else if len(s) < 16 {
		fe("", "secret", "%d bytes is too short: use at least 16 (openssl rand -hex 32)", len(s))
	} else {
		c.secret = s
	}
	// Power policies.
	c.policies = map[string]Policy{}
	for kind, v := range c.Policies {
		if kind != KindBBB && kind != KindVM {
			fe("", "policies", "%q: not a worker kind: want bbb or vm", kind)
			continue
		}
		p, err := ParsePolicy(v)
		if err != nil {
			fe("", "policies."+kind, "%v", err)
			continue
		}
		c.policies[kind] = p
	}
	// Network.
	var subnet netip.Prefix
	if c.Network.Port == 0 {
		c.Network.Port = protocol.DefaultPort
	}
	if c.Network.Port < 1 || c.Network.Port > 65535 {
		fe("", "network.port", "%d is not a TCP port", c.Network.Port)
	}
	p, err := netip.ParsePrefix(c.Network.Subnet)
	if err != nil {
		fe("", "network.subnet", "want CIDR like 192.168.1.0/24: %v", err)
	} else {
		subnet = p.Masked()
	}
	for _, f := range []struct{ name, v string }{{"network.gateway", c.Network.Gateway}, {"network.orchestrator", c.Network.Orchestrator}} {
		if a, err := netip.ParseAddr(f.v); err != nil {
			fe("", f.name, "want an IPv4 address: %q", f.v)
		} else if subnet.IsValid() && !subnet.Contains(a) {
			fe("", f.name, "%s is outside subnet %s", a, subnet)
		}
	}
	if len(c.Workers) == 0 {
		fe("", "workers", "no workers: list at least one")
	}
	ids, ips, macs := map[string]int{}, map[string]string{}, map[string]string{}
	lines, taps := map[Line]string{}, map[string]string{}
	orch, _ := netip.ParseAddr(c.Network.Orchestrator)
	for i, w := range c.Workers {
		name := w.ID
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
			fe(name, "id", "missing")
		} else if err := bootparams.ValidID(w.ID); err != nil {
			name = fmt.Sprintf("#%d", i+1) // the id itself may hold a newline
			fe(name, "id", "%q: use 1-32 of a-z, 0-9 and '-', starting with a letter or digit (the id becomes the worker's hostname and kernel parameter)", w.ID)
		} else if j, dup := ids[w.ID]; dup {
			fe(name, "id", "duplicate of worker #%d", j+1)
		}
		ids[w.ID] = i
		switch w.Kind {
		case KindBBB:
			if w.Power.Pin == "" && (w.Power.Chip == "" || w.Power.Line == nil) {
				fe(name, "power", "a bbb worker needs power.pin (e.g. P9_12) or power.chip and power.line")
			}
			line, field, ok := Line{}, "power.pin", true
			if w.Power.Pin != "" {
				l, err := LookupPin(w.Power.Pin)
				if err != nil {
					fe(name, "power.pin", "%v", err)
				}
				line, ok = l, err == nil
			} else if w.Power.Chip != "" && w.Power.Line != nil {
				line, field = Line{Chip: w.Power.Chip, Offset: *w.Power.Line}, "power.line"
			} else {
				ok = false
			}
			if ok {
				if other, dup := lines[line]; dup {
					fe(name, field, "%s line %d also powers worker %s: wire each board to its own GPIO line", line.Chip, line.Offset, other)
				} else {
					lines[line] = name
				}
			}
		case KindVM:
			if w.VM.Arch != "" {
				if _, err := target.Parse(w.VM.Arch); err != nil {
					fe(name, "vm.arch", "%v", err)
				}
			}
			if n := w.VM.Net; n != "" && n != "user" && n != "tap" {
				fe(name, "vm.net", "%q: want user or tap", n)
			}
			if w.VM.Net == "tap" && w.VM.Tap == "" {
				fe(name, "vm.tap", "net tap needs the tap device name")
			} else if w.VM.Net == "tap" {
				if other, dup := taps[w.VM.Tap]; dup {
					fe(name, "vm.tap", "%s is also worker %s's: give each VM its own tap device", w.VM.Tap, other)
				}
				taps[w.VM.Tap] = name
			}
		default:
			fe(name, "kind", "%q: want bbb or vm", w.Kind)
		}
		if w.MAC != "" {
			hw, err := net.ParseMAC(w.MAC)
			if err != nil || len(hw) != 6 {
				fe(name, "mac", "%q is not a MAC address", w.MAC)
			} else if other, dup := macs[hw.String()]; dup {
				fe(name, "mac", "%s is also worker %s's", hw, other)
			} else {
				macs[hw.String()] = name
			}
		}
		a, err := netip.ParseAddr(w.IP)
		switch {
		case err != nil:
			fe(name, "ip", "want an IPv4 address: %q", w.IP)
		case subnet.IsValid() && !subnet.Contains(a):
			fe(name, "ip", "%s is outside subnet %s", a, subnet)
		case a == orch:
			fe(name, "ip", "%s is the orchestrator's address (network.orchestrator): give the worker another", a)
		case w.UsesUserNet():
			// Each user-networking VM has its own private network.
		default:
			if other, dup := ips[a.String()]; dup {
				fe(name, "ip", "%s is also worker %s's", a, other)
			}
			ips[a.String()] = name
		}
	}
	if c.Meter != nil {
		workers := make([]string, 0, len(c.Workers))
		for _, w := range c.Workers {
			workers = append(workers, w.ID)
		}
		if err := c.Meter.Validate(workers); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
