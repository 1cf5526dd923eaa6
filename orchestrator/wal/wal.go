// Package wal is an append-only write-ahead log: frames of bytes, each
// made durable by one fdatasync before Append returns (through io_uring
// where the kernel allows it: ring.go).
//
// The queue database (orchestrator.BoltStore) writes each group of
// invocations to a log like this one instead of to bbolt, whose commit
// costs two fdatasyncs and a rewrite of every page it touched; now and
// then it copies what the log holds into bbolt (a checkpoint) and starts
// the log over.
//
// A log file is a header and frames:
//
//	header: "MFWAL001" | epoch (uint64) | 12 zero bytes | CRC-32C of the first 28 bytes
//	frame:  length (uint32) | CRC-32C of epoch, length and payload (uint32) | payload
//
// all integers little-endian. Reset starts the log over by writing a
// header with a new epoch; frames left from an older epoch no longer
// check (the epoch is in every frame's CRC), so the file is reused in
// place without zeroing it. The file is preallocated with zeros: an
// fdatasync after overwriting written blocks need not journal the file's
// size or its extents (measured here on ext4: 160-180 µs against 240-270
// µs for appending to the end of the file).
//
// Reading stops at the first frame that does not check: a write a crash
// cut short, never acknowledged (frames are only appended, each synced
// before the next).
package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

const (
	magic      = "MFWAL001"
	headerSize = 32
	frameHead  = 8
	// MaxFrame bounds one frame's payload: a length past it is damage.
	MaxFrame = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrDamaged means a log's header does not check: its frames cannot be
// trusted. The caller decides what to do with the file (the queue
// database moves it aside and starts a new one).
var ErrDamaged = errors.New("write-ahead log header damaged")

// Options tune Open.
type Options struct {
	// Prealloc: the file is grown with zeros to at least this size.
	Prealloc int64
	// PlainSync makes Append call fdatasync(2) itself instead of through
	// io_uring (ring.go); io_uring is used only where the kernel allows
	// it, so this is for comparison, or a kernel whose io_uring misbehaves.
	PlainSync bool
}

// Log is one log file, open for appending. It is not safe for concurrent
// use.
type Log struct {
	f     *os.File
	s     syncer
	path  string
	epoch uint64
	off   int64 // where the next frame goes
	size  int64 // the file's size (preallocated)
	// frames are the valid frames found when the log was opened.
	frames [][]byte
}

// Open opens the log at path, creating it (epoch 0, mode 0600) when it
// does not exist, reads its frames (Frames) and grows the file with zeros
// to at least o.Prealloc bytes. ErrDamaged: the header does not check.
func Open(path string, o Options) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	created := false
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		created = true
	}
	if err != nil {
		return nil, err
	}
	l := &Log{f: f, path: path, s: plainSync{f}}
	if created {
		err = l.create(o.Prealloc)
	} else {
		err = l.read()
		if err == nil {
			err = l.grow(o.Prealloc)
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	if !o.PlainSync {
		if r, err := newRingSync(f); err == nil {
			l.s = r
		}
	}
	return l, nil
}

// create writes the header of a new log, preallocates it and makes its
// name durable.
func (l *Log) create(prealloc int64) error {
	if _, err := l.f.WriteAt(header(0), 0); err != nil {
		return err
	}
	l.off, l.size = headerSize, headerSize
	if err := l.grow(prealloc); err != nil {
		return err
	}
	if err := l.f.Sync(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(l.path))
}

// read checks the header and collects the frames that check.
func (l *Log) read() error {
	fi, err := l.f.Stat()
	if err != nil {
		return err
	}
	l.size = fi.Size()
	h := make([]byte, headerSize)
	if _, err := l.f.ReadAt(h, 0); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrDamaged, l.path, err)
	}
	if string(h[:8]) != magic || crc32.Checksum(h[:28], castagnoli) != binary.LittleEndian.Uint32(h[28:]) {
		return fmt.Errorf("%w: %s", ErrDamaged, l.path)
	}
	l.epoch = binary.LittleEndian.Uint64(h[8:])
	r := bufio.NewReaderSize(io.NewSectionReader(l.f, headerSize, l.size-headerSize), 1<<20)
	l.off = headerSize
	head := make([]byte, frameHead)
	for {
		if _, err := io.ReadFull(r, head); err != nil {
			return nil
		}
		n := binary.LittleEndian.Uint32(head)
		if n == 0 || n > MaxFrame || int64(n) > l.size-l.off-frameHead {
			return nil
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return nil
		}
		if frameCRC(l.epoch, head[:4], payload) != binary.LittleEndian.Uint32(head[4:]) {
			return nil
		}
		l.frames = append(l.frames, payload)
		l.off += frameHead + int64(n)
	}
}

// grow extends the file with zeros to size bytes, synced.
func (l *Log) grow(size int64) error {
	if l.size >= size {
		return nil
	}
	zeros := make([]byte, 1<<20)
	for l.size < size {
		n := min(int64(len(zeros)), size-l.size)
		if _, err := l.f.WriteAt(zeros[:n], l.size); err != nil {
			return err
		}
		l.size += n
	}
	return l.f.Sync()
}

func header(epoch uint64) []byte {
	h := make([]byte, headerSize)
	copy(h, magic)
	binary.LittleEndian.PutUint64(h[8:], epoch)
	binary.LittleEndian.PutUint32(h[28:], crc32.Checksum(h[:28], castagnoli))
	return h
}

func frameCRC(epoch uint64, length, payload []byte) uint32 {
	var e [8]byte
	binary.LittleEndian.PutUint64(e[:], epoch)
	c := crc32.Update(0, castagnoli, e[:])
	c = crc32.Update(c, castagnoli, length)
	return crc32.Update(c, castagnoli, payload)
}

// Frames are the frames that checked when the log was opened, in order.
func (l *Log) Frames() [][]byte { return l.frames }

// Epoch is the log's epoch (Reset sets it).
func (l *Log) Epoch() uint64 { return l.epoch }

// Len is how many bytes the log's frames take, header included.
func (l *Log) Len() int64 { return l.off }

// Append writes payload as one frame and makes it durable: after a crash
// the frame reads back whole, or not at all. An error leaves the log in
// an unknown state (a failed fdatasync may have dropped pages): stop
// appending.
func (l *Log) Append(payload []byte) error {
	if len(payload) == 0 || len(payload) > MaxFrame {
		return fmt.Errorf("wal: frame of %d bytes (1 to %d)", len(payload), MaxFrame)
	}
	buf := make([]byte, frameHead+len(payload))
	binary.LittleEndian.PutUint32(buf, uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[4:], frameCRC(l.epoch, buf[:4], payload))
	copy(buf[frameHead:], payload)
	if _, err := l.f.WriteAt(buf, l.off); err != nil {
		return err
	}
	if err := l.s.sync(); err != nil {
		return err
	}
	l.off += int64(len(buf))
	l.size = max(l.size, l.off)
	l.frames = nil // only the frames found at Open are kept
	return nil
}

// Reset starts the log over at epoch, which must be higher than any
// epoch this log or its sibling had: every frame in the file stops
// checking at once. It is durable when Reset returns.
func (l *Log) Reset(epoch uint64) error {
	if _, err := l.f.WriteAt(header(epoch), 0); err != nil {
		return err
	}
	if err := l.s.sync(); err != nil {
		return err
	}
	l.epoch, l.off, l.frames = epoch, headerSize, nil
	return nil
}

// Sync says how Append makes a frame durable: "io_uring" or "fdatasync".
func (l *Log) Sync() string { return l.s.name() }

// Close closes the file (once: a second Close is an error, not a close
// of whatever descriptor took the number meanwhile).
func (l *Log) Close() error {
	if l.s == nil {
		return os.ErrClosed
	}
	l.s.close()
	l.s = nil
	return l.f.Close()
}

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
