// Package progress shows what a long step is doing. On a terminal it keeps
// one updating line with the elapsed time; elsewhere (CI logs) it prints one
// line when a step starts and one when it ends.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Step is one running step.
type Step struct {
	name  string
	out   io.Writer
	tty   bool
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
}

// Start begins a step named name, reporting to stderr.
func Start(name string) *Step {
	s := &Step{name: name, out: os.Stderr, tty: IsTerminal(os.Stderr), start: time.Now(), stop: make(chan struct{})}
	if !s.tty {
		fmt.Fprintf(s.out, "mfbuild: %s ...\n", name)
		return s
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			fmt.Fprintf(s.out, "\r\033[Kmfbuild: %s ... %s", s.name, time.Since(s.start).Round(time.Second))
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Done ends the step, reporting err if it failed.
func (s *Step) Done(err error) {
	close(s.stop)
	s.wg.Wait()
	if s.tty {
		fmt.Fprint(s.out, "\r\033[K")
	}
	el := time.Since(s.start).Round(100 * time.Millisecond)
	if err != nil {
		fmt.Fprintf(s.out, "mfbuild: %s failed after %s\n", s.name, el)
		return
	}
	fmt.Fprintf(s.out, "mfbuild: %s done in %s\n", s.name, el)
}
