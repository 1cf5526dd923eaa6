package cluster

import (
	"errors"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/target"
)

const good = `
network:
  subnet: 192.168.1.0/24
  gateway: 192.168.1.1
  orchestrator: 192.168.1.2
secret: 000102030405060708090a0b0c0d0e0f
workers:
  - id: bbb0
    kind: bbb
    mac: de:ad:be:ef:00:00
    ip: 192.168.1.10
    power: {pin: P9_12}
  - id: vm0
    kind: vm
    ip: 192.168.1.20
    vm: {net: tap, tap: tap0}
`

func TestParseGood(t *testing.T) {
	c, err := Parse([]byte(good), ".")
	if err != nil {
		t.Fatal(err)
	}
	if c.Network.Port != 63302 || len(c.SecretBytes()) != 16 || len(c.Workers) != 2 {
		t.Fatalf("cluster = %+v", c)
	}
	if w, ok := c.Worker("bbb0"); !ok || w.Power.Pin != "P9_12" {
		t.Fatalf("worker bbb0 = %+v", w)
	}
	if c.Addr() != "192.168.1.2:63302" {
		t.Fatalf("Addr = %s", c.Addr())
	}
}

// Each bad file gets a FieldError naming the worker, the field and (for
// YAML-level problems) the line, with a message that says what to fix.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, from, to string
		worker, field  string
		line           int
	}{
		{"unknown field", "  - id: vm0\n", "  - id: vm0\n    colour: red\n", "", "colour", 14},
		{"unknown nested field", "vm: {net: tap, tap: tap0}", "vm: {net: tap, tap: tap0, cpus: 2}", "", "cpus", 16},
		{"second document", "    vm: {net: tap, tap: tap0}\n", "    vm: {net: tap, tap: tap0}\n---\nworkers: []\n", "", "---", 17},
		{"wrong type", "  orchestrator: 192.168.1.2\n", "  orchestrator: 192.168.1.2\n  port: many\n", "", "yaml", 6},
		{"duplicate id", "id: vm0", "id: bbb0", "bbb0", "id", 0},
		{"id with colon", "id: vm0", "id: 'vm0:10.0.0.1'", "#2", "id", 0},
		{"id with newline", "id: vm0", `id: "vm0\nmf.orch=6.6.6.6:1"`, "#2", "id", 0},
		{"id with space", "id: vm0", "id: 'vm0 init=/bin/sh'", "#2", "id", 0},
		{"upper-case id", "id: vm0", "id: VM0", "#2", "id", 0},
		{"duplicate ip", "ip: 192.168.1.20", "ip: 192.168.1.10", "vm0", "ip", 0},
		{"ip of the orchestrator", "ip: 192.168.1.20", "ip: 192.168.1.2", "vm0", "ip", 0},
		{"ip outside subnet", "ip: 192.168.1.20", "ip: 10.1.1.1", "vm0", "ip", 0},
		{"bad kind", "kind: vm", "kind: pi", "vm0", "kind", 0},
		{"bad arch", "vm: {net: tap, tap: tap0}", "vm: {net: tap, tap: tap0, arch: sparc}", "vm0", "vm.arch", 0},
		{"bad pin", "pin: P9_12", "pin: P9_99", "bbb0", "power.pin", 0},
		{"no power", "    power: {pin: P9_12}\n", "", "bbb0", "power", 0},
		{"duplicate pin", "", bbb1 + "    power: {pin: P9_12}\n", "bbb1", "power.pin", 0},
		{"pin and chip line the same", "", bbb1 + "    power: {chip: gpiochip1, line: 28}\n", "bbb1", "power.line", 0},
		{"duplicate tap", "", vm1 + "    vm: {net: tap, tap: tap0}\n", "vm1", "vm.tap", 0},
		{"duplicate mac", "", vm1 + "    mac: DE:AD:BE:EF:00:00\n", "vm1", "mac", 0},
		{"short secret", "secret: 000102030405060708090a0b0c0d0e0f", "secret: 0001", "", "secret", 0},
		{"no secret", "secret: 000102030405060708090a0b0c0d0e0f", "", "", "secret", 0},
		{"bad mac", "mac: de:ad:be:ef:00:00", "mac: nope", "bbb0", "mac", 0},
		{"gateway outside", "gateway: 192.168.1.1", "gateway: 192.168.2.1", "", "network.gateway", 0},
		{"bad policy", "workers:\n", "policies: {bbb: sometimes}\nworkers:\n", "", "policies.bbb", 0},
		{"policy of no kind", "workers:\n", "policies: {pi: off}\nworkers:\n", "", "policies", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := good + tt.to
			if tt.from != "" {
				src = strings.Replace(good, tt.from, tt.to, 1)
			}
			if src == good {
				t.Fatalf("test edit %q did not apply", tt.from)
			}
			_, err := Parse([]byte(src), ".")
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a FieldError", err)
			}
			if fe.Worker != tt.worker || fe.Field != tt.field || fe.Line != tt.line || fe.Msg == "" {
				t.Fatalf("err = %#v (%v)\nwant worker %q field %q line %d", fe, err, tt.worker, tt.field, tt.line)
			}
			t.Log(err)
		})
	}
}

// Workers appended to the good file by TestParseErrors.
const (
	bbb1 = "  - id: bbb1\n    kind: bbb\n    ip: 192.168.1.11\n"
	vm1  = "  - id: vm1\n    kind: vm\n    ip: 192.168.1.21\n"
)

func TestParseARMVM(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(good, "vm: {net: tap, tap: tap0}", "vm: {net: tap, tap: tap0, arch: arm}", 1)), ".")
	if err != nil {
		t.Fatal(err)
	}
	w, _ := c.Worker("vm0")
	b, _ := c.Worker("bbb0")
	if w.VM.Target() != target.ARMv7 || b.VM.Target() != target.X86 {
		t.Fatalf("targets %v %v", w.VM.Target(), b.VM.Target())
	}
}

func TestLocal(t *testing.T) {
	c := Local(3)
	if len(c.Workers) != 3 || len(c.SecretBytes()) != 32 {
		t.Fatalf("local cluster = %+v", c)
	}
	if !c.Workers[0].UsesUserNet() {
		t.Fatal("local workers should use QEMU user networking")
	}
}

func TestLookupPin(t *testing.T) {
	// The original cluster's wiring: worker 0..9 power lines.
	for _, pin := range []string{"P9_12", "P9_15", "P9_23", "P9_25", "P9_27", "P8_8", "P8_10", "P8_11", "P8_14", "P9_26"} {
		if _, err := LookupPin(pin); err != nil {
			t.Errorf("%s: %v", pin, err)
		}
	}
	l, _ := LookupPin("P9_12")
	if l.Chip != "gpiochip1" || l.Offset != 28 { // GPIO1_28 = GPIO 60
		t.Errorf("P9_12 = %+v, want gpiochip1 line 28", l)
	}
}

func TestParseMeter(t *testing.T) {
	withMeter := func(section string) string { return good + "meter:\n" + section }
	c, err := Parse([]byte(withMeter("  driver: wattsup\n  device: /dev/ttyUSB0\n  states: states.yaml\n")), "/etc/microfaas")
	if err != nil {
		t.Fatal(err)
	}
	if c.Meter.Covers != "strip" || c.Meter.States != "/etc/microfaas/states.yaml" {
		t.Errorf("meter = %+v; want covers filled in and states next to the cluster file", c.Meter)
	}
	c, err = Parse([]byte(withMeter("  driver: wattsup\n  device: /dev/ttyUSB0\n  states: /var/lib/states.yaml\n")), "/etc/microfaas")
	if err != nil || c.Meter.States != "/var/lib/states.yaml" {
		t.Errorf("absolute states path: %v, %+v", err, c.Meter)
	}
	for _, bad := range []string{
		"  driver: wattsup\n",                                     // no device
		"  driver: hwmon\n  sensors: {bbb9: ina226/bbb9}\n",       // not a worker
		"  driver: cpu-time\n  covers: board:bbb0\n  model: {}\n", // wrong covers, no watts per core
	} {
		_, err := Parse([]byte(withMeter(bad)), ".")
		if !errors.Is(err, ErrMeterConfig) {
			t.Errorf("meter section %q: err = %v, want an ErrMeterConfig", bad, err)
		}
	}
}
