package workerlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/protocol"
)

func readAll(t *testing.T, b *Book, worker string, boot int) Chunk {
	t.Helper()
	c, err := b.Read(worker, boot, 0)
	if err != nil {
		t.Fatalf("Read(%s, %d): %v", worker, boot, err)
	}
	return c
}

// TestBootsConsoleThenSession: a QEMU boot's console and its session's
// shipped lines land in one boot; a boot that never connects keeps its
// console; a board (no console) gets a boot per connection; numbers go on
// across a restart of mforch.
func TestBootsConsoleThenSession(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "boots")
	b, _ := Open(dir, Options{})
	io.WriteString(b.Console("vm0"), "early console line\r\nMFINIT-START up")
	bt := b.Connected("vm0")
	if bt.N() != 1 {
		t.Fatalf("session boot %d, want 1 (the console's)", bt.N())
	}
	bt.WriteBatch(protocol.LogBatch{Dropped: 3, Lines: []protocol.LogLine{
		{Source: protocol.LogKernel, Text: "[    0.000000] Linux version 6.1"},
		{Source: protocol.LogMfinit, Text: "level=INFO msg=\"worker connected\""},
		{Source: "evil\n|", Text: "forged"}}})
	io.WriteString(b.Console("vm0"), "kernel panic: never connected\n") // boot 2: no session
	if n := b.Connected("bbb0").N(); n != 1 {
		t.Errorf("board's first boot %d", n)
	}
	if n := b.Connected("bbb0").N(); n != 2 {
		t.Errorf("board's second connection is boot %d, want 2", n)
	}

	c := readAll(t, b, "vm0", 1)
	want := "console | early console line\nmforch | 3 lines dropped on the worker (its log buffer was full or over its rate)\n" +
		"kernel | [    0.000000] Linux version 6.1\nmfinit | level=INFO msg=\"worker connected\"\nworker | forged\n" +
		"console | MFINIT-START up\n" // the unfinished line, written when its boot ended
	if c.Text != want || c.Latest || fmt.Sprint(c.Boots) != "[1 2]" {
		t.Errorf("boot 1: %+v\nwant text:\n%s", c, want)
	}
	if c := readAll(t, b, "vm0", 0); c.Boot != 2 || !c.Latest || c.Text != "console | kernel panic: never connected\n" {
		t.Errorf("latest boot: %+v", c)
	}
	// A new mforch on the same folder goes on counting.
	b2, _ := Open(dir, Options{})
	if n := b2.Connected("vm0").N(); n != 3 {
		t.Errorf("after a restart: boot %d, want 3", n)
	}
	for _, p := range []string{dir, filepath.Join(dir, "vm0"), filepath.Join(dir, "vm0", "1.log")} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: %v %v: want owner-only", p, fi.Mode(), err)
		}
	}
}

// TestCapAndRotation: a boot's file stops at its cap with one note, and a
// worker keeps only its last Keep boots.
func TestCapAndRotation(t *testing.T) {
	b, _ := Open(t.TempDir(), Options{MaxBytes: 1000, Keep: 3})
	bt := b.Connected("vm0")
	for i := range 500 {
		bt.WriteBatch(protocol.LogBatch{Lines: []protocol.LogLine{{Source: protocol.LogKernel, Text: fmt.Sprintf("flood %d", i)}}})
	}
	c := readAll(t, b, "vm0", 1)
	if len(c.Text) > 1000+200 || !strings.HasSuffix(c.Text, "the rest of this boot's lines are dropped\n") ||
		strings.Count(c.Text, "capped") != 1 {
		t.Errorf("capped boot: %d bytes, ends %q", len(c.Text), c.Text[max(0, len(c.Text)-80):])
	}
	for range 5 {
		b.Connected("vm0")
	}
	if c := readAll(t, b, "vm0", 0); fmt.Sprint(c.Boots) != "[4 5 6]" {
		t.Errorf("boots kept %v, want the last 3: [4 5 6]", c.Boots)
	}
	if _, err := b.Read("vm0", 1, 0); !errors.Is(err, ErrNoLogs) {
		t.Errorf("a rotated boot: %v, want ErrNoLogs", err)
	}
}

func TestReadErrorsAndOffsets(t *testing.T) {
	b, _ := Open(t.TempDir(), Options{})
	for _, id := range []string{"../etc", "", "a/b", ".."} {
		if _, err := b.Read(id, 0, 0); !errors.Is(err, ErrBadWorker) {
			t.Errorf("Read(%q): %v, want ErrBadWorker", id, err)
		}
	}
	if _, err := b.Read("vm9", 0, 0); !errors.Is(err, ErrNoLogs) {
		t.Errorf("no boots: %v", err)
	}
	w := b.Console("vm0")
	io.WriteString(w, "one\ntwo\nthr")
	c := readAll(t, b, "vm0", 0)
	if c.Text != "console | one\nconsole | two\n" {
		t.Errorf("text %q", c.Text)
	}
	io.WriteString(w, "ee\n")
	c2, err := b.Read("vm0", 0, c.Next)
	if err != nil || c2.Text != "console | three\n" || c2.Offset != c.Next {
		t.Errorf("from offset %d: %+v %v", c.Next, c2, err)
	}
}
