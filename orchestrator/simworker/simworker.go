// Package simworker is a power controller whose workers are the real worker
// runtime (runtime.Worker) running as goroutines in this process, talking
// the real protocol over loopback TCP. Tests and benchmarks of the scheduler
// use it where booting a VM per job would measure QEMU, not the orchestrator.
package simworker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/runtime"
	"github.com/microfaas/microfaas/runtime/functions"
	"github.com/microfaas/microfaas/runtime/shiplog"
)

// Controller starts and stops in-process workers.
type Controller struct {
	Orch   string // orchestrator address to dial
	Secret []byte // the cluster secret: each worker gets its own key from it
	// BootDelay simulates boot time before the worker dials.
	BootDelay time.Duration
	// SecretFor, if set, overrides the cluster secret a worker derives its
	// key from (to test refusal).
	SecretFor map[string][]byte
	// Logs, if set, gives each boot of a worker its own log to ship
	// (runtime.Worker.Logs).
	Logs func(id string) *shiplog.Ring
	// FunctionsDir, if set, holds user functions the workers run and list
	// in their hello beside the built-ins (functions.UserNames): workers
	// of different controllers can then differ in what they run.
	FunctionsDir string
	// FunctionsDirs, if set, overrides FunctionsDir per worker id:
	// workers of one controller then differ in what they run.
	FunctionsDirs map[string]string

	mu       sync.Mutex
	running  map[string]run
	onExit   func(string, error)
	PowerOns int
	wg       sync.WaitGroup
}

// ErrKilled is the exit error of a worker that was powered off externally.
var ErrKilled = errors.New("killed")

// run is one boot of a worker: kill ends it, done is closed once its
// goroutine has reported the exit.
type run struct {
	kill func()
	done chan struct{}
}

// PowerOn starts the worker goroutine. A power-on while the worker's last
// boot is still ending waits for that end (or ctx), as a board's power
// button does during its shutdown: on a loaded host the goroutine can
// outlast the orchestrator's power-off holdoff, and refusing then made a
// failed boot that no real worker would have.
func (c *Controller) PowerOn(ctx context.Context, w cluster.Worker) error {
	c.mu.Lock()
	if c.running == nil {
		c.running = map[string]run{}
	}
	for {
		r, ok := c.running[w.ID]
		if !ok {
			break
		}
		c.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			return fmt.Errorf("worker %s still on from its last boot: %w", w.ID, context.Cause(ctx))
		}
		c.mu.Lock()
	}
	wctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan struct{})
	c.running[w.ID] = run{kill: func() { cancel(ErrKilled) }, done: done}
	c.PowerOns++
	secret := c.Secret
	if s, ok := c.SecretFor[w.ID]; ok {
		secret = s
	}
	dir := c.FunctionsDir
	if d, ok := c.FunctionsDirs[w.ID]; ok {
		dir = d
	}
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(done)
		select {
		case <-time.After(c.BootDelay):
		case <-wctx.Done():
		}
		var exitErr error
		if wctx.Err() == nil {
			// The worker's own key, as mforch delivers it to a real one.
			key, _ := protocol.WorkerKey(secret, w.ID)
			wk := &runtime.Worker{
				Config: runtime.Config{ID: w.ID, Orch: c.Orch, Failsafe: 10 * time.Second},
				Key:    key,
				Env:    functions.Env{FunctionsDir: dir},
				Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
				// A simulated boot "takes" BootDelay plus 1 ms of kernel uptime.
				Clock: func() float64 { return float64(c.BootDelay.Milliseconds()) + 1 },
			}
			if c.Logs != nil {
				wk.Logs = c.Logs(w.ID)
			}
			wk.Run(wctx)
		}
		if context.Cause(wctx) == ErrKilled {
			exitErr = ErrKilled
		}
		c.mu.Lock()
		delete(c.running, w.ID)
		fn := c.onExit
		c.mu.Unlock()
		cancel(nil)
		if fn != nil {
			fn(w.ID, exitErr)
		}
	}()
	return nil
}

// PowerOff kills the worker.
func (c *Controller) PowerOff(ctx context.Context, w cluster.Worker) error {
	c.mu.Lock()
	r, ok := c.running[w.ID]
	c.mu.Unlock()
	if ok {
		r.kill()
	}
	return nil
}

// OnExit registers the exit handler.
func (c *Controller) OnExit(fn func(string, error)) {
	c.mu.Lock()
	c.onExit = fn
	c.mu.Unlock()
}

// Running reports whether worker id is on.
func (c *Controller) Running(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.running[id]
	return ok
}

// Wait waits for every worker goroutine to end.
func (c *Controller) Wait() { c.wg.Wait() }
