package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/microfaas/microfaas/bootparams"
)

// TestPortDevice: the port is found by the name in its sysfs entry, and
// nothing else passes for it.
func TestPortDevice(t *testing.T) {
	tests := []struct {
		name  string
		ports map[string]string // sysfs entry -> its name file ("": no file)
		want  string            // the device under dev ("": an error)
		err   error
	}{
		{"the port", map[string]string{"vport0p1": "org.microfaas.0\n"}, "vport0p1", nil},
		{"among others", map[string]string{"vport0p1": "other\n", "vport1p1": "org.microfaas.0\n", "vport1p2": ""}, "vport1p1", nil},
		{"name without newline", map[string]string{"vport2p3": "org.microfaas.0"}, "vport2p3", nil},
		{"no ports at all", nil, "", ErrNoPort},
		{"no port of that name", map[string]string{"vport0p1": "org.microfaas.1\n"}, "", ErrNoPort},
		{"a prefix of the name is not it", map[string]string{"vport0p1": "org.microfaas.0x\n"}, "", ErrNoPort},
		{"an entry that is no vport", map[string]string{"hvc0": "org.microfaas.0\n"}, "", ErrNoPort},
		{"two ports of the name", map[string]string{"vport0p1": "org.microfaas.0\n", "vport0p2": "org.microfaas.0\n"}, "", bootparams.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			sys := filepath.Join(root, "sys/class/virtio-ports")
			if tt.ports != nil {
				os.MkdirAll(sys, 0o755)
			}
			for entry, name := range tt.ports {
				os.MkdirAll(filepath.Join(sys, entry), 0o755)
				if name != "" {
					os.WriteFile(filepath.Join(sys, entry, "name"), []byte(name), 0o644)
				}
			}
			got, err := PortDevice(sys, "/dev", "org.microfaas.0")
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("PortDevice = %q, %v; want %v", got, err, tt.err)
				}
				return
			}
			if err != nil || got != filepath.Join("/dev", tt.want) {
				t.Fatalf("PortDevice = %q, %v; want /dev/%s", got, err, tt.want)
			}
		})
	}
	if _, err := PortDevice(t.TempDir(), "/dev", "../mem"); !errors.Is(err, bootparams.ErrInvalid) {
		t.Fatalf("a name with a path in it: %v, want ErrInvalid", err)
	}
}

// TestOpenPort: the opened port is a connection whose reads time out at
// their deadline (the session's failsafe), here on a FIFO, which is
// pollable like the port's device.
func TestOpenPort(t *testing.T) {
	root := t.TempDir()
	sys, dev := filepath.Join(root, "ports"), filepath.Join(root, "dev")
	os.MkdirAll(filepath.Join(sys, "vport0p1"), 0o755)
	os.MkdirAll(dev, 0o755)
	os.WriteFile(filepath.Join(sys, "vport0p1", "name"), []byte("org.microfaas.0\n"), 0o644)
	if _, err := OpenPort(sys, dev, "org.microfaas.0"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenPort without the device: %v, want ErrNotExist", err)
	}
	if err := syscall.Mkfifo(filepath.Join(dev, "vport0p1"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := OpenPort(sys, dev, "org.microfaas.0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.RemoteAddr().String(); got != "vport:org.microfaas.0" {
		t.Errorf("RemoteAddr = %q", got)
	}
	if _, err := c.Write([]byte("x\n")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	if n, err := c.Read(b); err != nil || string(b[:n]) != "x\n" {
		t.Fatalf("Read = %q, %v", b[:n], err)
	}
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err = c.Read(b)
	if !errors.Is(err, os.ErrDeadlineExceeded) || !connectionCut(err) {
		t.Fatalf("Read past the deadline: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the deadline took %s", d)
	}
}
