package clock

import (
	"testing"
	"time"
)

func TestFakeFiresInOrder(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewFake(start)
	var fired []time.Duration
	at := func(d time.Duration) func() { return func() { fired = append(fired, c.Now().Sub(start)) } }
	c.AfterFunc(3*time.Second, at(3*time.Second))
	c.AfterFunc(time.Second, at(time.Second))
	stopped := c.AfterFunc(2*time.Second, at(2*time.Second))
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop: true once, then false")
	}
	c.WaitTimers(2)
	c.Advance(2500 * time.Millisecond)
	if len(fired) != 1 || fired[0] != time.Second {
		t.Fatalf("fired %v after 2.5 s, want [1s] (each at its own time)", fired)
	}
	if got := c.Now().Sub(start); got != 2500*time.Millisecond {
		t.Fatalf("now %s, want 2.5s", got)
	}
	c.Advance(time.Second)
	if len(fired) != 2 || fired[1] != 3*time.Second || c.Pending() != 0 {
		t.Fatalf("fired %v, pending %d", fired, c.Pending())
	}
}

func TestSleep(t *testing.T) {
	c := NewFake(time.Unix(0, 0))
	done := make(chan bool)
	go func() { done <- Sleep(c, time.Minute, nil) }()
	c.WaitTimers(1)
	c.Advance(time.Minute)
	if !<-done {
		t.Fatal("Sleep did not report the full wait")
	}
	stop := make(chan struct{})
	go func() { done <- Sleep(c, time.Minute, stop) }()
	c.WaitTimers(1)
	close(stop)
	if <-done || c.Pending() != 0 {
		t.Fatal("an interrupted Sleep reports the full wait or leaves its timer")
	}
}
