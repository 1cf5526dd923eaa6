// Package qemurelay is the guestfwd relay of QEMU workers on user
// networking (orchestrator/power/netfwd.go): slirp runs, per guest
// connection, the binary that started QEMU with Arg as its first argument
// and the connection on stdin. Any binary that links this package serves
// as the relay. Its start is on every worker's path to its first job, so
// it imports only os and syscall: its init runs among the first of a large
// binary's, before the others' (crypto, net, HTTP, ...) cost anything.
package qemurelay

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Arg, as a binary's first argument, makes it a relay: Arg SOURCE TARGET
// SLOTS, SOURCE and TARGET IPv4 (SOURCE "-": any) and SLOTS a folder.
const Arg = "__mf-qemu-relay"

// MaxRelays bounds the relays (host processes) one worker's connections
// may hold at once: slirp starts one per connection, so without a bound a
// function opening connections to a service would fill the host with
// processes. Past it a connection is closed at once.
const MaxRelays = 32

// ErrTooManyRelays means a worker holds MaxRelays connections already.
var ErrTooManyRelays = errors.New("too many connections from this worker at once")

func init() {
	if len(os.Args) == 5 && os.Args[1] == Arg {
		if err := Relay(0, os.Args[2], os.Args[3], os.Args[4]); err != nil {
			os.Stderr.WriteString("mforch relay: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// Relay copies between the guest's connection (the socket guest) and
// target, connected from the loopback address source ("-": any), once it
// holds one of the worker's MaxRelays slots (lock files in slots).
func Relay(guest int, source, target, slots string) error {
	slot, err := TakeSlot(slots)
	if err != nil {
		return err
	}
	defer slot.Close() // the lock goes with it
	host, err := dial(source, target)
	if err != nil {
		return err
	}
	defer syscall.Close(host)
	done := make(chan struct{}, 2)
	go pipe(host, guest, done)
	go pipe(guest, host, done)
	<-done
	<-done
	return nil
}

// pipe copies src to dst until src ends, then ends dst's sending side.
func pipe(dst, src int, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	buf := make([]byte, 32<<10)
	for {
		n, err := syscall.Read(src, buf)
		if err == syscall.EINTR {
			continue
		}
		if n <= 0 || err != nil {
			break
		}
		for b := buf[:n]; len(b) > 0; {
			m, err := syscall.Write(dst, b)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				syscall.Shutdown(src, syscall.SHUT_RD)
				return
			}
			b = b[m:]
		}
	}
	syscall.Shutdown(dst, syscall.SHUT_WR)
}

// dial connects to target (IPv4:port) from source, falling back to any
// address when source is not one of this host's.
func dial(source, target string) (int, error) {
	host, port, ok := strings.Cut(target, ":")
	p, perr := strconv.Atoi(port)
	to, terr := ipv4(host)
	if !ok || perr != nil || terr != nil || p < 1 || p > 65535 {
		return -1, errors.New("relay target " + target + ": want IPv4:PORT")
	}
	for _, from := range []string{source, "-"} {
		s, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		if from != "-" {
			a, err := ipv4(from)
			if err == nil {
				err = syscall.Bind(s, &syscall.SockaddrInet4{Addr: a})
			}
			if err != nil {
				syscall.Close(s)
				continue // not this host's: any address will do
			}
		}
		if err := syscall.Connect(s, &syscall.SockaddrInet4{Port: p, Addr: to}); err != nil {
			syscall.Close(s)
			return -1, errors.New("relay to " + target + ": " + err.Error())
		}
		return s, nil
	}
	return -1, errors.New("relay to " + target + ": no socket")
}

func ipv4(s string) ([4]byte, error) {
	var a [4]byte
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return a, errors.New("not IPv4")
	}
	for i, part := range parts {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 || n > 255 {
			return a, errors.New("not IPv4")
		}
		a[i] = byte(n)
	}
	return a, nil
}

// TakeSlot locks one of the lock files 0..MaxRelays-1 in dir (made as
// needed, owner-only); the lock lasts as long as the returned file (the
// process) does.
func TakeSlot(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for i := range MaxRelays {
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(i)), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			return f, nil
		}
		f.Close()
	}
	return nil, ErrTooManyRelays
}
