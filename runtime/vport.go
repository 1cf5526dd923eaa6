package runtime

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/microfaas/microfaas/bootparams"
)

// A QEMU worker on user networking reaches the orchestrator over a
// virtio-serial port (mf.orch=vport:NAME; orchestrator/power's
// sessionport.go): the kernel lists each port under
// /sys/class/virtio-ports/vportNpM with its name in a file "name", and
// devtmpfs makes /dev/vportNpM. The worker opens it read-write and keeps
// it open for the whole session: a port takes one opener at a time, and
// the functions' sandbox has its own /dev without it.

// Where the ports are listed and their devices live.
const (
	PortsDir = "/sys/class/virtio-ports"
	DevDir   = "/dev"
)

// ErrNoPort means no virtio-serial port has the name mf.orch gives.
var ErrNoPort = errors.New("no virtio-serial port of that name: the worker kernel needs CONFIG_VIRTIO_CONSOLE " +
	"(rebuild the worker image with mfbuild) and qemu the virtserialport (the orchestrator's QEMU controller adds it)")

// PortDevice is the device of the virtio-serial port named name: the entry
// of portsDir whose name file holds it (one line), in devDir.
func PortDevice(portsDir, devDir, name string) (string, error) {
	if err := bootparams.ValidPortName(name); err != nil {
		return "", err
	}
	entries, err := os.ReadDir(portsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("virtio-serial ports: %w", err)
	}
	var found []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(portsDir, e.Name(), "name"))
		if err != nil || strings.TrimSuffix(string(b), "\n") != name {
			continue
		}
		// The entry names the device; a name that is no plain file name
		// is no port of ours.
		if !strings.HasPrefix(e.Name(), "vport") || strings.ContainsAny(e.Name(), "/\\") {
			continue
		}
		found = append(found, e.Name())
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%w (%q under %s)", ErrNoPort, name, portsDir)
	case 1:
		return filepath.Join(devDir, found[0]), nil
	}
	slices.Sort(found)
	return "", fmt.Errorf("%w: %d virtio-serial ports are named %q (%s): qemu must give the session's one port that name",
		bootparams.ErrInvalid, len(found), name, strings.Join(found, ", "))
}

// OpenPort opens the virtio-serial port named name as a connection to the
// orchestrator. Its reads and writes take deadlines (the device is
// pollable), as the session's failsafe needs.
func OpenPort(portsDir, devDir, name string) (net.Conn, error) {
	dev, err := PortDevice(portsDir, devDir, name)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		// EBUSY: someone else holds the port; the session needs it alone.
		return nil, fmt.Errorf("virtio-serial port %s: %w", name, err)
	}
	if err := f.SetDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("virtio-serial port %s (%s) takes no deadlines, which the failsafe needs: %w", name, dev, err)
	}
	return &portConn{File: f, addr: portAddr(name)}, nil
}

// portConn is an open port as a net.Conn: *os.File has the reads,
// writes, deadlines and Close the session uses.
type portConn struct {
	*os.File
	addr portAddr
}

func (c *portConn) LocalAddr() net.Addr  { return c.addr }
func (c *portConn) RemoteAddr() net.Addr { return c.addr }

// portAddr names a port: "vport:NAME".
type portAddr string

func (a portAddr) Network() string { return "vport" }
func (a portAddr) String() string  { return bootparams.PortPrefix + string(a) }
