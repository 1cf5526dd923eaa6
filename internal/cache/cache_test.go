package cache

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFillPublishesAtomically(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	if _, err := c.Fill("k", "key1", func(dir string) error {
		os.WriteFile(filepath.Join(dir, "out"), []byte("x"), 0o644)
		return errors.New("build failed")
	}); err == nil {
		t.Fatal("a failed fill reported success")
	}
	if c.Has("k", "key1") {
		t.Fatal("a failed fill left an entry")
	}
	dir, err := c.Fill("k", "key1", func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "out"), []byte("x"), 0o644)
	})
	if err != nil || !c.Has("k", "key1") {
		t.Fatalf("fill: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "out")); string(b) != "x" {
		t.Fatalf("entry content %q", b)
	}
}

func TestLockSerialises(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	unlock, err := c.Lock("k", "key")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan time.Time)
	go func() {
		u, err := c.Lock("k", "key")
		if err != nil {
			t.Error(err)
		}
		got <- time.Now()
		u()
	}()
	time.Sleep(100 * time.Millisecond)
	released := time.Now()
	unlock()
	if at := <-got; at.Before(released) {
		t.Fatal("the second locker did not wait for the first")
	}
}

func TestKeyIgnoresOrder(t *testing.T) {
	a, b := NewHasher(), NewHasher()
	a.Add("x", "1")
	a.Add("y", "2")
	b.Add("y", "2")
	b.Add("x", "1")
	if a.Key() != b.Key() {
		t.Fatal("key depends on insertion order")
	}
	b.Add("x", "3")
	if a.Key() == b.Key() {
		t.Fatal("key ignores a changed input")
	}
}
