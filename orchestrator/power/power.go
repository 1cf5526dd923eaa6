// Package power turns workers on and off. Every kind of worker has a
// Controller: QEMU starts and stops local microVMs; GPIO pulses a
// BeagleBone's PWR_BUT line.
package power

import (
	"context"
	"net"

	"github.com/microfaas/microfaas/cluster"
)

// Controller powers workers of one kind.
type Controller interface {
	// PowerOn starts the worker. It returns once the power-on is under way;
	// the worker announces itself over the protocol when it has booted.
	PowerOn(ctx context.Context, w cluster.Worker) error
	// PowerOff forces the worker off, for a worker that is hung or no longer
	// wanted. A worker told to power off over the protocol needs no call.
	PowerOff(ctx context.Context, w cluster.Worker) error
}

// ExitReporter is a Controller that knows when a worker went off by itself
// (a QEMU process that exited). The orchestrator uses it to notice a worker
// that died mid-job at once instead of waiting for a timeout.
type ExitReporter interface {
	OnExit(func(workerID string, err error))
}

// SessionSource is a Controller whose workers may reach the orchestrator
// over a channel of their own instead of the worker port: a QEMU worker on
// user networking talks over a virtio-serial port (qemu.go). The
// orchestrator registers fn, which runs the usual handshake on c and
// refuses a hello for any worker but workerID (protocol.Acceptor.ServeConn).
// A controller without a registered fn keeps its workers on the port.
type SessionSource interface {
	OnSession(fn func(workerID string, c net.Conn))
}

// BundleLoader is a Controller that can deliver a run-time deployed
// function's bundle with a power-on (the QEMU controller, in a full
// boot's initramfs), so the worker need not fetch it over the protocol.
type BundleLoader interface {
	Controller
	// PowerOnBundle is PowerOn, with b in the worker's boot when the boot
	// can carry it; when it cannot (a snapshot boot) the worker fetches
	// the bundle itself. b.R is read before it returns.
	PowerOnBundle(ctx context.Context, w cluster.Worker, b BootBundle) error
}
