package wal

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A log's fdatasync goes through io_uring when the kernel has it: the
// kernel's worker thread waits for the disk while the calling goroutine
// waits on an eventfd in Go's network poller, holding no P. A plain
// fdatasync(2) holds its P (a share of GOMAXPROCS) for the whole wait, until
// the scheduler's monitor notices, which it may do only milliseconds later:
// with two Ps, the queue database's committer, in an fdatasync most of
// the time, left the orchestrator about one P (measured in BenchmarkScheduler:
// the store's throughput rose by a third with -cpu 3, or with a sleep of
// the fdatasync's length in its place, while the in-memory case did not
// change). The fsync itself is the kernel's: IORING_OP_FSYNC with
// IORING_FSYNC_DATASYNC is fdatasync(2).

// syncer makes the data written to one file durable.
type syncer interface {
	sync() error
	close() error
	name() string
}

type plainSync struct{ f *os.File }

func (p plainSync) sync() error  { return fdatasync(p.f) }
func (p plainSync) close() error { return nil }
func (p plainSync) name() string { return "fdatasync" }

// io_uring ABI (include/uapi/linux/io_uring.h).
const (
	ioringOffSQRing     = 0
	ioringOffCQRing     = 0x8000000
	ioringOffSQEs       = 0x10000000
	ioringFeatSingleMap = 1 << 0
	ioringOpFsync       = 3
	ioringFsyncDatasync = 1 << 0
	ioringRegEventfd    = 4
	sqeSize             = 64
	cqeSize             = 16
)

type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqOffsets
	cqOff                                                                  cqOffsets
}

type sqOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

// ringSync is an io_uring with one fsync in flight at a time.
type ringSync struct {
	ring, file int
	sq, cq     []byte // the rings (the same mapping with IORING_FEAT_SINGLE_MMAP)
	sqes       []byte
	p          uringParams
	ev         *os.File // eventfd the ring signals on completion
}

// errNoRing means io_uring cannot be used here (old kernel, disabled by
// sysctl or seccomp): fdatasync(2) is used instead.
var errNoRing = errors.New("io_uring not available")

func newRingSync(f *os.File) (*ringSync, error) {
	r := &ringSync{file: int(f.Fd())}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 2, uintptr(unsafe.Pointer(&r.p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("%w: io_uring_setup: %v", errNoRing, errno)
	}
	r.ring = int(fd)
	unix.CloseOnExec(r.ring)
	if err := r.setup(); err != nil {
		r.close()
		return nil, fmt.Errorf("%w: %v", errNoRing, err)
	}
	return r, nil
}

func (r *ringSync) setup() error {
	p := &r.p
	sqSize := int(p.sqOff.array + p.sqEntries*4)
	cqSize := int(p.cqOff.cqes + p.cqEntries*cqeSize)
	single := p.features&ioringFeatSingleMap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	prot, flags := unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE
	if r.sq, err = unix.Mmap(r.ring, ioringOffSQRing, sqSize, prot, flags); err != nil {
		return err
	}
	r.cq = r.sq
	if !single {
		if r.cq, err = unix.Mmap(r.ring, ioringOffCQRing, cqSize, prot, flags); err != nil {
			return err
		}
	}
	if r.sqes, err = unix.Mmap(r.ring, ioringOffSQEs, int(p.sqEntries*sqeSize), prot, flags); err != nil {
		return err
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return err
	}
	// Non-blocking: os.NewFile puts it in the network poller.
	r.ev = os.NewFile(uintptr(efd), "io_uring eventfd")
	fd32 := int32(efd)
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.ring), ioringRegEventfd,
		uintptr(unsafe.Pointer(&fd32)), 1, 0, 0); errno != 0 {
		return fmt.Errorf("registering the eventfd: %v", errno)
	}
	return nil
}

func u32(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }

// sync submits an fdatasync of the file and waits for it on the eventfd.
func (r *ringSync) sync() error {
	p := &r.p
	tail := atomic.LoadUint32(u32(r.sq, p.sqOff.tail))
	idx := tail & *u32(r.sq, p.sqOff.ringMask)
	sqe := r.sqes[idx*sqeSize : (idx+1)*sqeSize]
	clear(sqe)
	sqe[0] = ioringOpFsync
	*(*int32)(unsafe.Pointer(&sqe[4])) = int32(r.file)
	*(*uint32)(unsafe.Pointer(&sqe[28])) = ioringFsyncDatasync
	*(*uint64)(unsafe.Pointer(&sqe[32])) = uint64(tail)
	*u32(r.sq, p.sqOff.array+idx*4) = idx
	atomic.StoreUint32(u32(r.sq, p.sqOff.tail), tail+1)
	for {
		// The kernel hands an fsync to its worker thread: this returns
		// without waiting for the disk.
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.ring), 1, 0, 0, 0, 0)
		if errno == 0 && n == 1 {
			break
		}
		if errno == 0 {
			// Not taken: waiting for its completion would wait forever.
			return fmt.Errorf("io_uring_enter submitted %d of 1", n)
		}
		if errno != syscall.EINTR {
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
	}
	var buf [8]byte
	for {
		head := atomic.LoadUint32(u32(r.cq, p.cqOff.head))
		if head != atomic.LoadUint32(u32(r.cq, p.cqOff.tail)) {
			off := p.cqOff.cqes + (head&*u32(r.cq, p.cqOff.ringMask))*cqeSize
			res := *(*int32)(unsafe.Pointer(&r.cq[off+8]))
			atomic.StoreUint32(u32(r.cq, p.cqOff.head), head+1)
			if res < 0 {
				return fmt.Errorf("fdatasync (io_uring): %w", syscall.Errno(-res))
			}
			return nil
		}
		// Parks this goroutine (no P held) until the ring signals; a
		// count left from an earlier completion only loops once more.
		if _, err := r.ev.Read(buf[:]); err != nil {
			return fmt.Errorf("io_uring eventfd: %w", err)
		}
	}
}

func (r *ringSync) close() error {
	if r.sqes != nil {
		unix.Munmap(r.sqes)
	}
	if r.cq != nil && (r.sq == nil || &r.cq[0] != &r.sq[0]) {
		unix.Munmap(r.cq)
	}
	if r.sq != nil {
		unix.Munmap(r.sq)
	}
	if r.ev != nil {
		r.ev.Close()
	}
	return unix.Close(r.ring)
}

func (r *ringSync) name() string { return "io_uring" }
