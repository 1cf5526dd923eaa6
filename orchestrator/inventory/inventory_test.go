package inventory

import (
	"errors"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/orchestrator/energy"
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

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, from, to, want string
	}{
		{"unknown field", "  - id: vm0\n", "  - id: vm0\n    colour: red\n", "field colour not found"},
		{"duplicate id", "id: vm0", "id: bbb0", "worker bbb0: id: duplicate of worker #1"},
		{"duplicate ip", "ip: 192.168.1.20", "ip: 192.168.1.10", "worker vm0: ip: 192.168.1.10 is also worker bbb0's"},
		{"ip outside subnet", "ip: 192.168.1.20", "ip: 10.1.1.1", "worker vm0: ip: 10.1.1.1 is outside subnet 192.168.1.0/24"},
		{"bad kind", "kind: vm", "kind: pi", `worker vm0: kind: "pi": want bbb or vm`},
		{"bad pin", "pin: P9_12", "pin: P9_99", `worker bbb0: power.pin: "P9_99" is not a BeagleBone`},
		{"no power", "    power: {pin: P9_12}\n", "", "worker bbb0: power: a bbb worker needs"},
		{"short secret", "secret: 000102030405060708090a0b0c0d0e0f", "secret: 0001", "secret: 2 bytes is too short"},
		{"no secret", "secret: 000102030405060708090a0b0c0d0e0f", "", "secret: missing"},
		{"bad mac", "mac: de:ad:be:ef:00:00", "mac: nope", `worker bbb0: mac: "nope" is not a MAC address`},
		{"gateway outside", "gateway: 192.168.1.1", "gateway: 192.168.2.1", "network.gateway: 192.168.2.1 is outside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(good, tt.from, tt.to, 1)
			if src == good {
				t.Fatalf("test edit %q did not apply", tt.from)
			}
			_, err := Parse([]byte(src), ".")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v\nwant it to contain %q", err, tt.want)
			}
		})
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
		if !errors.Is(err, energy.ErrConfig) {
			t.Errorf("meter section %q: err = %v, want an energy.ErrConfig", bad, err)
		}
	}
}
