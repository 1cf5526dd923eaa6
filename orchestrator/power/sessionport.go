package power

// The orchestrator session of a QEMU worker on user networking runs over a
// virtio-serial port, not over TCP through slirp. A TCP connection to the
// worker port needs a guestfwd rule, and slirp serves such a rule by
// forking and exec'ing a relay process per connection (netfwd.go): about
// 50 ms before the guest's SYN is answered, on every cold start's path
// (docs/security.md). A port is a channel of the one VM: per boot mforch
// makes a socket pair, gives one end to qemu as the port's chardev
// (-chardev socket,fd=N: qemu inherits it, no listener anyone could dial)
// and hands the other to the orchestrator's handshake
// (SessionSource, protocol.Acceptor.ServeConn), which refuses a hello for
// any other worker. The guest opens the port by its name
// (mf.orch=vport:NAME, runtime.OpenPort); the worker holds it open for
// its whole session, a port takes one opener, and the functions'
// sandbox has no such device: a function can neither open it nor reach
// the worker port over TCP (no rule forwards it any more).
//
// Only workers whose kernel has virtio-serial (target.QEMU.SessionPort:
// the x86 microVM) use it; ARM virt workers keep the relay. Snapshot boots
// use it too: the saved VM has the same devices, with a null chardev the
// restore replaces by that boot's socket.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/cluster"
)

// SessionPort is the name of the worker's virtio-serial port (QEMU's
// virtserialport name=, the guest's /sys/class/virtio-ports/*/name).
const SessionPort = "org.microfaas.0"

// sessionChardev is the port's chardev id on qemu's command line.
const sessionChardev = "mfs"

// OnSession registers the handler of the sessions that arrive over the
// workers' ports. Without one, workers reach the worker port over TCP
// through the relay, as ARM virt workers always do.
func (q *QEMU) OnSession(fn func(workerID string, c net.Conn)) {
	q.mu.Lock()
	q.onSession = fn
	q.mu.Unlock()
}

// OnSession registers fn with every controller.
func (m QEMUByArch) OnSession(fn func(string, net.Conn)) {
	for _, q := range m {
		q.OnSession(fn)
	}
}

// portDriverMark is a string of the kernel's virtio-serial driver
// (drivers/char/virtio_console.c: the ports' class) that an uncompressed
// kernel holds when it was built with CONFIG_VIRTIO_CONSOLE.
var portDriverMark = []byte("virtio-ports")

// kernelLacksPorts reports whether kernel is an uncompressed ELF (the
// vmlinux QEMU boots when it lies beside the bzImage) without the
// virtio-serial driver: a worker kernel built before the session port.
// A compressed image cannot be told: it is assumed to have it.
func kernelLacksPorts(kernel string) bool {
	f, err := os.Open(kernel)
	if err != nil {
		return false
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil || string(magic) != "\x7fELF" {
		return false
	}
	b, err := os.ReadFile(kernel)
	return err == nil && !bytes.Contains(b, portDriverMark)
}

// session returns the registered session handler (nil: none).
func (q *QEMU) session() func(string, net.Conn) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.onSession
}

// viaPort reports whether worker w's session runs over its virtio-serial
// port: a user-networking worker whose kernel has the driver, on a
// controller whose sessions someone takes, unless the relay was asked for
// (benchmarks) or the network is the unrestricted one of before.
func (q *QEMU) viaPort(w cluster.Worker) bool {
	return w.UsesUserNet() && q.cfg.Arch.QEMU.SessionPort && !q.noPorts && !q.plainNet && !q.relayPort && q.session() != nil
}

// portOrch is mf.orch of a worker on its port.
const portOrch = bootparams.PortPrefix + SessionPort

// portArgs are the qemu arguments of the port: the chardev (backend
// "null" in a snapshot's saved VM, else "socket,fd=FD"), the
// virtio-serial device (virtio-mmio: the microvm has no PCI) and the port.
// max_ports=2 (port 0 is reserved for a console, ours is 1): with the
// default 31 the guest sets up 64 virtqueues, and its driver's probe took
// 11 to 32 ms of every boot under TCG instead of about 6.
func portArgs(backend string) []string {
	return []string{"-chardev", backend + ",id=" + sessionChardev,
		"-device", "virtio-serial-device,max_ports=2",
		"-device", "virtserialport,chardev=" + sessionChardev + ",name=" + SessionPort}
}

// socketBackend is the chardev backend of qemu's inherited descriptor fd.
func socketBackend(fd int) string { return fmt.Sprintf("socket,fd=%d", fd) }

// setChardev replaces the port's chardev backend in args (a snapshot's
// saved arguments) by backend.
func setChardev(args []string, backend string) {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-chardev" {
			args[i+1] = backend + ",id=" + sessionChardev
			return
		}
	}
}

// sessionPair makes one boot's channel: qemu's end, to inherit, and the
// orchestrator's, as a net.Conn that names the worker as its peer.
func sessionPair(workerID string) (*os.File, net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("session port socket pair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "session-"+workerID)
	c, err := net.FileConn(mine) // a dup: mine is closed either way
	mine.Close()
	theirs := os.NewFile(uintptr(fds[1]), "session-qemu-"+workerID)
	if err != nil {
		theirs.Close()
		return nil, nil, fmt.Errorf("session port: %w", err)
	}
	return theirs, portConn{Conn: c, peer: PortAddr(workerID)}, nil
}

// PortAddr is the address a session over worker id's port comes from (in
// logs and the orchestrator's status: "vport:ID").
type PortAddr string

func (a PortAddr) Network() string { return "vport" }
func (a PortAddr) String() string  { return "vport:" + string(a) }

// portConn is the orchestrator's end of a port: a unix socket whose peer
// (qemu) has no name of its own.
type portConn struct {
	net.Conn
	peer PortAddr
}

func (c portConn) RemoteAddr() net.Addr { return c.peer }
