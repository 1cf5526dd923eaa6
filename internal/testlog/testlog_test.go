package testlog

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestBufferConcurrentWriters(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				fmt.Fprintf(&b, "x")
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := len(b.String()); got != 800 {
		t.Fatalf("len = %d, want 800", got)
	}
}

func TestBufferWait(t *testing.T) {
	tests := []struct {
		name  string
		write []string
		want  string
		found bool
	}{
		{"already there", []string{"ready\n"}, "ready", true},
		{"split over writes", []string{"rea", "dy\n"}, "ready", true},
		{"never said", []string{"other\n"}, "ready", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Buffer
			go func() {
				for _, w := range tt.write {
					b.Write([]byte(w))
				}
			}()
			if got := b.Wait(tt.want, 200*time.Millisecond); got != tt.found {
				t.Fatalf("Wait(%q) = %v, want %v; buffer %q", tt.want, got, tt.found, b.String())
			}
			if tt.found != b.Contains(tt.want) {
				t.Fatalf("Contains(%q) disagrees with Wait", tt.want)
			}
		})
	}
}
