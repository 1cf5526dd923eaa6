// Package wattsupsim is a WattsUp Pro meter on a pseudo-terminal, for tests
// that have no meter: it speaks the meter's serial protocol (reset, header
// request, external logging at an interval, "#d" data packets) and reports
// the power of a schedule, optionally with line noise, packets split across
// writes or cut short, and unplugging.
package wattsupsim

import (
	"fmt"
	"io"
	"math"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Noise is what the line does to packets; probabilities per packet.
type Noise struct {
	Seed     int64
	Garbage  float64 // bytes of junk before the packet
	Split    float64 // the packet written in two parts with a pause between
	Truncate float64 // the packet cut short (lost)
}

// Options configure a simulator.
type Options struct {
	// Power is the schedule: watts drawn at t.
	Power func(t time.Time) float64
	// Link is the stable path the driver opens, a symlink to the current pty
	// (like /dev/serial/by-id/...). Required.
	Link string
	// Second is how long one protocol second lasts (default 1s; tests run
	// faster with a shorter one).
	Second time.Duration
	Volts  float64 // default 120
	Noise  Noise
}

// Packet is one data packet the simulator sent, for tests to compare with.
type Packet struct {
	Start, End time.Time // the interval it averages
	Avg        float64   // exact average power of the schedule over it
	Watts      float64   // what the packet says (0.1 W resolution)
	Intact     bool      // sent whole (not cut short)
}

// Sim is a running simulated meter.
type Sim struct {
	opt  Options
	rng  *rand.Rand
	stop chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	master   *os.File
	interval int // logging interval in protocol seconds; 0: not logging
	since    time.Time
	wh       float64
	commands []string
	packets  []Packet
	gen      int // bumps on every plug, to stop a stale emitter
}

// Start creates the pty and the link and starts the meter.
func Start(opt Options) (*Sim, error) {
	if opt.Second <= 0 {
		opt.Second = time.Second
	}
	if opt.Volts <= 0 {
		opt.Volts = 120
	}
	if opt.Power == nil || opt.Link == "" {
		return nil, fmt.Errorf("wattsupsim: Power and Link are required")
	}
	s := &Sim{opt: opt, rng: rand.New(rand.NewSource(opt.Noise.Seed)), stop: make(chan struct{})}
	if err := s.Plug(); err != nil {
		return nil, err
	}
	return s, nil
}

// Path is the link the driver opens.
func (s *Sim) Path() string { return s.opt.Link }

// OpenPTY opens a new pseudo-terminal master and returns it with its
// slave's path.
func OpenPTY() (*os.File, string, error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("wattsupsim: open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("wattsupsim: unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("wattsupsim: pty number: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), "/dev/pts/" + strconv.Itoa(n), nil
}

// Plug connects the meter: a new pty behind the link. The meter starts not
// logging, as after power-up; the driver must start it again.
func (s *Sim) Plug() error {
	m, slave, err := OpenPTY()
	if err != nil {
		return err
	}
	os.Remove(s.opt.Link)
	if err := os.Symlink(slave, s.opt.Link); err != nil {
		m.Close()
		return fmt.Errorf("wattsupsim: %w", err)
	}
	s.mu.Lock()
	s.master, s.interval = m, 0
	s.gen++
	gen := s.gen
	s.mu.Unlock()
	s.wg.Add(2)
	go s.read(m)
	go s.emit(m, gen)
	return nil
}

// Unplug disconnects the meter: the pty goes away (the driver sees a hang
// up) and so does the link.
func (s *Sim) Unplug() {
	s.mu.Lock()
	m := s.master
	s.master, s.interval = nil, 0
	s.gen++
	s.mu.Unlock()
	os.Remove(s.opt.Link)
	if m != nil {
		m.Close()
	}
}

// Close stops the meter.
func (s *Sim) Close() {
	close(s.stop)
	s.Unplug()
	s.wg.Wait()
}

// Commands are the well-formed command packets received, in order.
func (s *Sim) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.commands...)
}

// Packets are the data packets sent, in order.
func (s *Sim) Packets() []Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Packet(nil), s.packets...)
}

// read handles commands from the driver.
func (s *Sim) read(m *os.File) {
	defer s.wg.Done()
	buf := make([]byte, 256)
	var pkt []byte
	in := false
	for {
		n, err := m.Read(buf)
		for _, c := range buf[:n] {
			switch {
			case c == '#':
				in, pkt = true, pkt[:0]
			case !in:
			case c == ';':
				in = false
				s.command(string(pkt))
			default:
				pkt = append(pkt, c)
			}
		}
		if err != nil {
			select {
			case <-s.stop:
				return
			default:
			}
			s.mu.Lock()
			gone := s.master != m
			s.mu.Unlock()
			if gone {
				return
			}
			// EIO: no one has the slave open yet.
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// command executes one command packet (without '#' and ';').
func (s *Sim) command(body string) {
	f := strings.Split(body, ",")
	if len(f) < 3 {
		return
	}
	n, err := strconv.Atoi(f[2])
	if err != nil || n != len(f)-3 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commands = append(s.commands, "#"+body+";")
	switch f[0] + "," + f[1] {
	case "R,W": // reset: clear memory
		s.wh = 0
	case "H,R": // header
		if s.master != nil {
			io.WriteString(s.master, "#h,-,18,W,V,A,WH,Cost,WH/Mo,Cost/Mo,Wmax,Vmax,Amax,Wmin,Vmin,Amin,PF,DC,PC,HZ,VA;\r\n")
		}
	case "L,W": // #L,W,3,<E|I>,<reserved>,<interval>;
		if n == 3 && f[3] == "E" {
			if iv, err := strconv.Atoi(f[5]); err == nil && iv > 0 {
				s.interval, s.since = iv, time.Now()
			}
		}
	case "L,R": // stop logging
		s.interval = 0
	}
}

// average is the mean of the schedule over [a,b), by the midpoint rule on
// at most 1 ms steps.
func (s *Sim) average(a, b time.Time) float64 {
	d := b.Sub(a)
	steps := int(d / time.Millisecond)
	if steps < 50 {
		steps = 50
	}
	h := d / time.Duration(steps)
	var sum float64
	for i := 0; i < steps; i++ {
		sum += s.opt.Power(a.Add(time.Duration(i)*h + h/2))
	}
	return sum / float64(steps)
}

// emit sends a data packet at the end of every logging interval.
func (s *Sim) emit(m *os.File, gen int) {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		if s.gen != gen {
			s.mu.Unlock()
			return
		}
		iv, start := s.interval, s.since
		s.mu.Unlock()
		wait := s.opt.Second / 20 // not logging: look again soon
		end := start.Add(time.Duration(iv) * s.opt.Second)
		if iv > 0 {
			wait = time.Until(end)
		}
		t := time.NewTimer(wait)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-t.C:
		}
		s.mu.Lock()
		// Send only if logging was not restarted or stopped meanwhile.
		ok := iv > 0 && s.gen == gen && s.interval == iv && s.since.Equal(start)
		if ok {
			s.since = end
		}
		s.mu.Unlock()
		if ok {
			s.send(m, start, end)
		}
	}
}

func (s *Sim) send(m *os.File, start, end time.Time) {
	avg := s.average(start, end)
	dw := int(math.Round(avg * 10))
	v := s.opt.Volts
	s.mu.Lock()
	s.wh += float64(dw) / 10 * end.Sub(start).Seconds() * float64(time.Second) / float64(s.opt.Second) / 3600
	wh := s.wh
	s.mu.Unlock()
	amps := float64(dw) / 10 / v
	body := fmt.Sprintf("#d,-,18,%d,%d,%d,%d,0,0,0,%d,%d,%d,%d,%d,%d,100,100,0,600,%d;\r\n",
		dw, int(v*10), int(math.Round(amps*1000)), int(math.Round(wh*10)),
		dw, int(v*10), int(math.Round(amps*1000)), dw, int(v*10), int(math.Round(amps*1000)), dw)
	nz := s.opt.Noise
	p := Packet{Start: start, End: end, Avg: avg, Watts: float64(dw) / 10, Intact: true}
	if s.rng.Float64() < nz.Garbage {
		junk := []byte("\x00\xff garbage,12;;,,\r\n~")
		m.Write(junk[:1+s.rng.Intn(len(junk)-1)])
	}
	switch {
	case s.rng.Float64() < nz.Truncate:
		p.Intact = false
		m.Write([]byte(body[:1+s.rng.Intn(len(body)-4)]))
	case s.rng.Float64() < nz.Split:
		k := 1 + s.rng.Intn(len(body)-2)
		m.Write([]byte(body[:k]))
		time.Sleep(time.Millisecond)
		m.Write([]byte(body[k:]))
	default:
		m.Write([]byte(body))
	}
	s.mu.Lock()
	s.packets = append(s.packets, p)
	s.mu.Unlock()
}
