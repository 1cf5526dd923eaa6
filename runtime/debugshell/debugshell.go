// Package debugshell runs a shell on the serial console of a debug worker
// image (mf.debug=1 on the kernel command line, set by mfbuild image
// --debug; runtime.Boot starts it when bootparams.Params.Debug), for
// bringing up a new board: the worker runs as usual, and the
// board stays on until the person at the console leaves the shell. The shell
// is never reachable over the network.
package debugshell

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
)

// Shell is the shell debug images carry (u-root's gosh, builder/debug.go).
const Shell = "/bin/gosh"

// Session is a running console shell.
type Session struct {
	done chan struct{}
	once sync.Once
}

// Start runs the shell on /dev/console in a session of its own. If the image
// has no shell it logs why and returns a session that is already over.
func Start(log *slog.Logger) *Session {
	s := &Session{done: make(chan struct{})}
	if _, err := os.Stat(Shell); err != nil {
		log.Error("debug shell requested but the image has none (build it with mfbuild image --debug)", "err", err)
		close(s.done)
		return s
	}
	go func() {
		defer close(s.done)
		err := run()
		log.Info("debug shell ended", "err", err)
	}()
	return s
}

func run() error {
	tty, err := os.OpenFile("/dev/console", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer tty.Close()
	cmd := exec.Command(Shell)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/bin", "HOME=/", "TERM=vt100"}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	os.Stdout.WriteString("mfinit: debug shell on the console; the worker powers off when you leave it (exit)\n")
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil // the shell's own exit status is the person's business
	}
	return err
}

// Wait blocks until the shell has ended.
func (s *Session) Wait() { <-s.done }
