package wattsup

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The WattsUp serial protocol (manufacturer's "Serial Data Format"
// document, rev. 4.41/4.42): ASCII packets "#<cmd>,<sub>,<count>,<arg>...;"
// with every character outside a packet ignored. Commands are upper case;
// the meter answers in lower case ("#d" data, "#h" header).

// Commands the driver sends.
const (
	CmdReset       = "#R,W,0;" // clear the meter's memory (accumulated watt-hours, min/max)
	CmdHeaderRead  = "#H,R,0;" // ask for the "#h" header naming the data fields
	CmdLogStop     = "#L,R,0;" // stop logging
	maxPacket      = 512       // longer than any packet the meter sends: resynchronise
	defaultFieldsN = 18
)

// CmdLogExternal starts external logging: a "#d" data packet every interval
// seconds on the serial line. The reserved argument is left empty, as in the
// manufacturer's example.
func CmdLogExternal(intervalSec int) string { return fmt.Sprintf("#L,W,3,E,,%d;", intervalSec) }

// DefaultFields are the data fields of a "#d" packet, in order, as the
// "#h" header names them when every field is selected.
var DefaultFields = []string{"W", "V", "A", "WH", "Cost", "WH/Mo", "Cost/Mo", "Wmax", "Vmax", "Amax",
	"Wmin", "Vmin", "Amin", "PF", "DC", "PC", "HZ", "VA"}

// Packet is one parsed packet.
type Packet struct {
	Cmd  byte     // 'd', 'h', ...
	Sub  string   // second argument ("-" in packets from the meter)
	Args []string // arguments after the count
}

// ErrBadPacket is a packet that does not follow the format: dropped.
var ErrBadPacket = errors.New("wattsup: malformed packet")

// ParsePacket parses the text between '#' and ';' (exclusive).
func ParsePacket(body string) (Packet, error) {
	f := strings.Split(body, ",")
	if len(f) < 3 || len(f[0]) != 1 {
		return Packet{}, fmt.Errorf("%w: %q", ErrBadPacket, body)
	}
	n, err := strconv.Atoi(f[2])
	if err != nil || n < 0 || n != len(f)-3 {
		return Packet{}, fmt.Errorf("%w: count %q for %d arguments: %q", ErrBadPacket, f[2], len(f)-3, body)
	}
	return Packet{Cmd: f[0][0], Sub: f[1], Args: f[3:]}, nil
}

// Scanner finds packets in a byte stream that may hold noise, packets split
// across reads and packets cut short: text outside '#'...';' is ignored, a
// '#' inside a packet restarts it (the earlier one was cut short), and a
// packet longer than any real one is dropped.
type Scanner struct {
	buf     []byte
	in      bool
	Dropped int // packets cut short, too long or malformed
}

// Feed consumes bytes and returns the complete, well-formed packets in them.
func (s *Scanner) Feed(p []byte) []Packet {
	var out []Packet
	for _, c := range p {
		switch {
		case c == '#':
			if s.in && len(s.buf) > 0 {
				s.Dropped++
			}
			s.in, s.buf = true, s.buf[:0]
		case !s.in:
			// outside a packet: ignored
		case c == ';':
			s.in = false
			pk, err := ParsePacket(string(s.buf))
			if err != nil {
				s.Dropped++
				continue
			}
			out = append(out, pk)
		case len(s.buf) >= maxPacket || c < 0x20 || c > 0x7e:
			// Too long, or a control/non-ASCII byte inside a packet.
			s.Dropped++
			s.in = false
		default:
			s.buf = append(s.buf, c)
		}
	}
	return out
}

// Reading is one "#d" data packet, in SI units.
type Reading struct {
	Watts, Volts, Amps float64
	WattHours          float64
	PowerFactor        float64 // percent
	Hz, VA             float64
}

// Scales of the fields the driver uses: the meter sends integers in tenths
// of a watt, volt, watt-hour, hertz and volt-amp, amps in thousandths, power
// factor in percent.
var scales = map[string]float64{"W": 10, "V": 10, "A": 1000, "WH": 10, "PF": 1, "HZ": 10, "VA": 10}

// ParseData decodes a "#d" packet with the given field names (from the "#h"
// header, or DefaultFields). Watts is required; other fields are optional.
func ParseData(p Packet, fields []string) (Reading, error) {
	if p.Cmd != 'd' {
		return Reading{}, fmt.Errorf("%w: not a data packet: %q", ErrBadPacket, p.Cmd)
	}
	if len(p.Args) != len(fields) {
		return Reading{}, fmt.Errorf("%w: %d fields, header names %d", ErrBadPacket, len(p.Args), len(fields))
	}
	var r Reading
	haveW := false
	for i, name := range fields {
		name = strings.ToUpper(name)
		scale, ok := scales[name]
		if !ok {
			continue
		}
		v, err := strconv.ParseInt(p.Args[i], 10, 64)
		if err != nil || v < 0 {
			return Reading{}, fmt.Errorf("%w: field %s = %q", ErrBadPacket, name, p.Args[i])
		}
		x := float64(v) / scale
		switch name {
		case "W":
			r.Watts, haveW = x, true
		case "V":
			r.Volts = x
		case "A":
			r.Amps = x
		case "WH":
			r.WattHours = x
		case "PF":
			r.PowerFactor = x
		case "HZ":
			r.Hz = x
		case "VA":
			r.VA = x
		}
	}
	if !haveW {
		return Reading{}, fmt.Errorf("%w: no W field in %v", ErrBadPacket, fields)
	}
	return r, nil
}
