package wal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func frames(n int) [][]byte {
	var out [][]byte
	for i := 0; i < n; i++ {
		out = append(out, []byte(fmt.Sprintf("frame %d %s", i, bytes.Repeat([]byte{byte('a' + i)}, 100))))
	}
	return out
}

// TestReadBack covers what survives a crash: whole frames read back in
// order, a damaged or torn last frame and anything after it does not,
// and frames of an older epoch never come back after a Reset.
func TestReadBack(t *testing.T) {
	three := frames(3)
	cases := []struct {
		name   string
		damage func(t *testing.T, path string, l *Log) // after three frames are appended
		want   [][]byte
	}{
		{"clean", nil, three},
		{"last frame's payload flipped", func(t *testing.T, path string, l *Log) {
			flip(t, path, l.Len()-1)
		}, three[:2]},
		{"last frame's length flipped", func(t *testing.T, path string, l *Log) {
			flip(t, path, l.Len()-int64(frameHead+len(three[2])))
		}, three[:2]},
		{"middle frame's CRC flipped: the rest is not read", func(t *testing.T, path string, l *Log) {
			flip(t, path, headerSize+int64(frameHead+len(three[0]))+5)
		}, three[:1]},
		{"torn: file cut in the last frame", func(t *testing.T, path string, l *Log) {
			if err := os.Truncate(path, l.Len()-10); err != nil {
				t.Fatal(err)
			}
		}, three[:2]},
		{"torn: length written, payload never was", func(t *testing.T, path string, l *Log) {
			// A frame head with no payload behind it (zeros from the
			// preallocation) after the three.
			f, _ := os.OpenFile(path, os.O_WRONLY, 0)
			f.WriteAt([]byte{50, 0, 0, 0, 1, 2, 3, 4}, l.Len())
			f.Close()
		}, three},
		{"reset: older frames at the same offsets do not come back", func(t *testing.T, path string, l *Log) {
			if err := l.Reset(l.Epoch() + 1); err != nil {
				t.Fatal(err)
			}
			if err := l.Append(three[0]); err != nil {
				t.Fatal(err)
			}
		}, three[:1]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log")
			l, err := Open(path, Options{Prealloc: 1 << 16})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range three {
				if err := l.Append(f); err != nil {
					t.Fatal(err)
				}
			}
			if c.damage != nil {
				c.damage(t, path, l)
			}
			l.Close()
			l, err = Open(path, Options{Prealloc: 1 << 16})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			got := l.Frames()
			if len(got) != len(c.want) {
				t.Fatalf("%d frames read back, want %d", len(got), len(c.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], c.want[i]) {
					t.Errorf("frame %d: %q, want %q", i, got[i], c.want[i])
				}
			}
			// Appending goes on after the last good frame.
			if err := l.Append([]byte("next")); err != nil {
				t.Fatal(err)
			}
			l.Close()
			l, err = Open(path, Options{Prealloc: 1 << 16})
			if err != nil {
				t.Fatal(err)
			}
			if n := len(l.Frames()); n != len(c.want)+1 || string(l.Frames()[n-1]) != "next" {
				t.Errorf("after appending once more: %d frames, want %d ending in next", n, len(c.want)+1)
			}
		})
	}
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x40
	f.WriteAt(b, off)
}

func TestDamagedHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.Append([]byte("x"))
	l.Close()
	flip(t, path, 9) // the epoch
	if _, err := Open(path, Options{}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("open with a damaged header: %v, want ErrDamaged", err)
	}
}

func TestCreatePreallocatesPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l, err := Open(path, Options{Prealloc: 3<<20 + 5})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 3<<20+5 || fi.Mode().Perm() != 0o600 {
		t.Errorf("new log: %d bytes, mode %v; want %d, 0600", fi.Size(), fi.Mode().Perm(), 3<<20+5)
	}
	if l.Len() != headerSize || len(l.Frames()) != 0 || l.Epoch() != 0 {
		t.Errorf("new log: len %d, %d frames, epoch %d", l.Len(), len(l.Frames()), l.Epoch())
	}
	if err := l.Append(nil); err == nil {
		t.Error("an empty frame was appended")
	}
}

// TestSyncThroughRing: where the kernel has io_uring, Append's fdatasync
// goes through it (the committer then holds no P while the disk works),
// and frames read back as with the plain call.
func TestSyncThroughRing(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "probe")
	if err != nil {
		t.Fatal(err)
	}
	probe, err := newRingSync(f)
	if err != nil {
		t.Skipf("no io_uring here (%v): the plain fdatasync is used", err)
	}
	probe.close()
	f.Close()
	for _, plain := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "log")
		l, err := Open(path, Options{Prealloc: 1 << 16, PlainSync: plain})
		if err != nil {
			t.Fatal(err)
		}
		want := map[bool]string{false: "io_uring", true: "fdatasync"}[plain]
		if l.Sync() != want {
			t.Errorf("PlainSync %v: syncs with %s, want %s", plain, l.Sync(), want)
		}
		for i := 0; i < 100; i++ {
			if err := l.Append([]byte(fmt.Sprintf("frame %d", i))); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Reset(7); err != nil {
			t.Fatal(err)
		}
		if err := l.Append([]byte("after reset")); err != nil {
			t.Fatal(err)
		}
		l.Close()
		l, err = Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if l.Epoch() != 7 || len(l.Frames()) != 1 || string(l.Frames()[0]) != "after reset" {
			t.Errorf("PlainSync %v: read back epoch %d, %d frames", plain, l.Epoch(), len(l.Frames()))
		}
		l.Close()
	}
}

// TestRingSyncError: a failed fsync through the ring is an error with the
// kernel's errno, not a success.
func TestRingSyncError(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "f")
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRingSync(f)
	if err != nil {
		t.Skipf("no io_uring here: %v", err)
	}
	defer r.close()
	if err := r.sync(); err != nil {
		t.Fatalf("sync of an open file: %v", err)
	}
	f.Close() // the ring now asks for an fsync of a closed descriptor
	if err := r.sync(); !errors.Is(err, syscall.EBADF) {
		t.Errorf("sync of a closed descriptor: %v, want EBADF", err)
	}
}
