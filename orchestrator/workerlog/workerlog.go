// Package workerlog keeps the workers' own logs on the orchestrator: one
// file per worker and boot, DIR/WORKER/N.log, holding what that boot's
// console showed (QEMU workers: mforch owns the console) and the kernel
// and mfinit lines the worker shipped over its session (runtime/shiplog).
// Each file is capped in size, and only a worker's last boots are kept.
//
// A boot begins when a worker's console opens (a QEMU power-on or reset),
// or, for a worker without one mforch sees (a board), when it connects.
// A boot that never connects still has its console.
package workerlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/protocol"
)

// Defaults of Options.
const (
	DefaultMaxBytes = 1 << 20 // per boot
	DefaultKeep     = 20      // boots per worker
)

// Sources of the lines in a boot's file, its first column; protocol.LogKernel
// and protocol.LogMfinit are the worker's.
const (
	SourceConsole = "console"
	SourceMforch  = "mforch" // the book's own notes: lines dropped, the cap
)

// Errors of Read.
var (
	ErrBadWorker = errors.New("not a worker id")
	ErrNoLogs    = errors.New("no logs")
)

// Options bound a Book.
type Options struct {
	MaxBytes int64 // per boot file (DefaultMaxBytes)
	Keep     int   // boots kept per worker (DefaultKeep)
}

// Book is the workers' logs under one folder. Safe for concurrent use.
type Book struct {
	dir  string
	opts Options
	mu   sync.Mutex
	cur  map[string]*Boot // each worker's latest boot this run
	last map[string]int   // each worker's latest boot number, from disk at first use
}

// Open opens (creating, owner-only: a boot's log is its worker's business)
// the book in dir.
func Open(dir string, opts Options) (*Book, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Keep <= 0 {
		opts.Keep = DefaultKeep
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("worker logs: %w", err)
	}
	return &Book{dir: dir, opts: opts, cur: map[string]*Boot{}, last: map[string]int{}}, nil
}

// Dir is the book's folder.
func (b *Book) Dir() string { return b.dir }

// Boot is one boot's log file.
type Boot struct {
	book      *Book
	worker    string
	n         int
	mu        sync.Mutex
	f         *os.File // nil once a later boot replaced it, or if it could not be made
	size      int64
	capped    bool
	connected bool
	part      []byte // a console line not yet ended
}

// N is the boot's number: 1 for a worker's first, counting across restarts
// of mforch.
func (bt *Boot) N() int {
	if bt == nil {
		return 0
	}
	return bt.n
}

// Console begins a new boot of worker and returns the writer for its
// console output (power.QEMUConfig.Console).
func (b *Book) Console(worker string) io.Writer {
	return consoleWriter{b.begin(worker, false)}
}

// Connected returns the boot a new session of worker belongs to: the boot
// whose console opened last, if no session had it yet; else a new boot (a
// board, or a worker that rebooted itself).
func (b *Book) Connected(worker string) *Boot {
	b.mu.Lock()
	bt := b.cur[worker]
	b.mu.Unlock()
	if bt != nil {
		bt.mu.Lock()
		fresh := !bt.connected && bt.f != nil
		bt.connected = true
		bt.mu.Unlock()
		if fresh {
			return bt
		}
	}
	return b.begin(worker, true)
}

// begin starts worker's next boot, closes its previous one and removes the
// boots past Keep.
func (b *Book) begin(worker string, connected bool) *Boot {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.last[worker]
	if !ok {
		boots, _ := b.boots(worker)
		if len(boots) > 0 {
			n = boots[len(boots)-1]
		}
	}
	n++
	b.last[worker] = n
	bt := &Boot{book: b, worker: worker, n: n, connected: connected}
	if prev := b.cur[worker]; prev != nil {
		prev.close()
	}
	b.cur[worker] = bt
	if bootparams.ValidID(worker) != nil {
		return bt // never a path from a bad id; it logs nothing
	}
	dir := filepath.Join(b.dir, worker)
	if err := os.MkdirAll(dir, 0o700); err == nil {
		bt.f, _ = os.OpenFile(filepath.Join(dir, strconv.Itoa(n)+".log"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	}
	for _, old := range must(b.boots(worker)) {
		if old <= n-b.opts.Keep {
			os.Remove(filepath.Join(dir, strconv.Itoa(old)+".log"))
		}
	}
	return bt
}

func must(v []int, _ error) []int { return v }

func (bt *Boot) close() {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if bt.f != nil {
		if len(bt.part) > 0 {
			bt.writeLocked(SourceConsole, string(bt.part))
			bt.part = nil
		}
		bt.f.Close()
		bt.f = nil
	}
}

// WriteBatch appends a batch the worker shipped. A nil Boot takes nothing.
func (bt *Boot) WriteBatch(lb protocol.LogBatch) {
	if bt == nil {
		return
	}
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if lb.Dropped > 0 {
		bt.writeLocked(SourceMforch, fmt.Sprintf("%d lines dropped on the worker (its log buffer was full or over its rate)", lb.Dropped))
	}
	for _, l := range lb.Lines {
		src := l.Source
		if src != protocol.LogKernel && src != protocol.LogMfinit {
			src = "worker"
		}
		bt.writeLocked(src, l.Text[:min(len(l.Text), protocol.MaxLogLine)])
	}
}

// writeLocked appends one line, "SOURCE | text", within the cap: the first
// line over it is replaced by a note, later ones are dropped.
func (bt *Boot) writeLocked(src, text string) {
	if bt.f == nil || bt.capped {
		return
	}
	text = strings.TrimRight(text, "\r\n")
	line := src + " | " + strings.ReplaceAll(text, "\n", " ") + "\n"
	if bt.size+int64(len(line)) > bt.book.opts.MaxBytes {
		bt.capped = true
		line = fmt.Sprintf("%s | log capped at %d bytes: the rest of this boot's lines are dropped\n", SourceMforch, bt.book.opts.MaxBytes)
	}
	n, _ := bt.f.WriteString(line)
	bt.size += int64(n)
}

// consoleWriter splits a console's output into lines.
type consoleWriter struct{ bt *Boot }

func (w consoleWriter) Write(p []byte) (int, error) {
	bt := w.bt
	bt.mu.Lock()
	defer bt.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		line, rest, found := strings.Cut(string(p), "\n")
		if !found {
			if len(bt.part) < protocol.MaxLogLine {
				bt.part = append(bt.part, line[:min(len(line), protocol.MaxLogLine-len(bt.part))]...)
			}
			break
		}
		if len(bt.part) > 0 {
			line = string(bt.part) + line
			bt.part = bt.part[:0]
		}
		bt.writeLocked(SourceConsole, line)
		p = []byte(rest)
	}
	return n, nil
}

// boots lists worker's boots on disk, in order.
func (b *Book) boots(worker string) ([]int, error) {
	if err := bootparams.ValidID(worker); err != nil {
		return nil, fmt.Errorf("%w: %q", ErrBadWorker, worker)
	}
	ents, err := os.ReadDir(filepath.Join(b.dir, worker))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(strings.TrimSuffix(e.Name(), ".log")); err == nil && n > 0 && strings.HasSuffix(e.Name(), ".log") {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Chunk is part of one boot's log, as the API serves it.
type Chunk struct {
	Worker string `json:"worker"`
	Boot   int    `json:"boot"`
	Boots  []int  `json:"boots"`  // the worker's boots kept, oldest first
	Offset int64  `json:"offset"` // of Text in the boot's file
	Next   int64  `json:"next"`   // the offset to ask for next
	// Latest: this is the worker's newest boot, which may still grow.
	Latest bool   `json:"latest"`
	Text   string `json:"text"`
}

// MaxRead bounds the text of one Read.
const MaxRead = 256 << 10

// Read returns worker's boot (0: the latest) from offset, at most MaxRead
// bytes, ending at a line's end when it can.
func (b *Book) Read(worker string, boot int, offset int64) (Chunk, error) {
	c := Chunk{Worker: worker, Boot: boot, Offset: offset, Next: offset}
	boots, err := b.boots(worker)
	if err != nil {
		return c, err
	}
	c.Boots = boots
	if len(boots) == 0 {
		return c, fmt.Errorf("%w: worker %s has no boot logs yet (or is not in the cluster)", ErrNoLogs, worker)
	}
	if boot == 0 {
		c.Boot = boots[len(boots)-1]
	}
	if !slices.Contains(boots, c.Boot) {
		return c, fmt.Errorf("%w: worker %s has no boot %d (kept: %d to %d)", ErrNoLogs, worker, c.Boot, boots[0], boots[len(boots)-1])
	}
	c.Latest = c.Boot == boots[len(boots)-1]
	f, err := os.Open(filepath.Join(b.dir, worker, strconv.Itoa(c.Boot)+".log"))
	if err != nil {
		return c, fmt.Errorf("%w: %v", ErrNoLogs, err)
	}
	defer f.Close()
	buf := make([]byte, MaxRead)
	n, err := f.ReadAt(buf, max(offset, 0))
	if err != nil && !errors.Is(err, io.EOF) {
		return c, err
	}
	buf = buf[:n]
	if i := strings.LastIndexByte(string(buf), '\n'); i >= 0 {
		buf = buf[:i+1] // whole lines; a line being written comes next time
	} else if n < MaxRead {
		buf = buf[:0]
	}
	c.Text, c.Next = string(buf), max(offset, 0)+int64(len(buf))
	return c, nil
}
