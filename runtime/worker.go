package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/runtime/functions"
	"github.com/microfaas/microfaas/runtime/sandbox"
	"github.com/microfaas/microfaas/runtime/shiplog"
)

// DefaultJobTimeout applies when a job names none.
const DefaultJobTimeout = 120 * time.Second

// Worker runs the worker side of the protocol.
type Worker struct {
	Config Config
	Env    functions.Env
	Log    *slog.Logger
	// Boot holds the boot milestones; Run fills ConnectedMS.
	Boot protocol.BootTimes
	// Clock returns kernel uptime in ms (Uptime on a worker).
	Clock func() float64
	// DialRetry is how long to keep trying to reach the orchestrator.
	DialRetry time.Duration
	// Key is this worker's own key (TakeKey, CardKey; protocol.WorkerKey).
	Key []byte
	// SecretsDir is where a user function finds the job's secrets, one
	// file each, as OpenFaaS mounts them (default /var/openfaas/secrets).
	SecretsDir string
	// SetClock sets the wall clock from a job's NowUnixNS (SetWallClock
	// on a worker); nil leaves the clock alone (tests, mfinit invoke).
	SetClock func(time.Time) error
	// Connected, if set, runs in its own goroutine once the hello is sent:
	// set-up that can wait until the worker is connected.
	Connected func()
	// Dial opens one connection to the orchestrator (nil: TCP with a 2 s
	// timeout, or the virtio-serial port an mf.orch of vport:NAME names).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Now and Sleep are the clock of the connection retries (nil: the real
	// one); Sleep returns early with ctx's error.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// Bundles holds the bundles of functions deployed at run time (nil: none
	// delivered, no cache, fetched into DefaultBundleWorkDir).
	Bundles *Bundles
	// Logs, if set, holds the worker's own log (kernel and mfinit lines):
	// each session ships it to an orchestrator that accepts log frames, in
	// its own goroutine, rate-limited, and holds it while a job runs
	// (runtime/shiplog). Nil: none sent.
	Logs *shiplog.Ring
	// LogShipper, if set, tunes the shipping (tests): its Rate, Burst,
	// Linger, Now and Sleep are used.
	LogShipper *shiplog.Shipper

	connectedRan bool
	// watchdog is the watchdog function kept running between a warm
	// worker's calls of the same function.
	watchdog *keptWatchdog
}

// Retry pacing: a refused dial is tried again every dialRetryEvery (the
// orchestrator is not up yet: connect as soon as it is); a failed
// handshake (the port full of strangers' connections, a dropped hello)
// backs off from handshakeBackoffMin to handshakeBackoffMax, so a flood is
// not fed by the workers themselves.
const (
	dialRetryEvery      = 50 * time.Millisecond
	handshakeBackoffMin = 50 * time.Millisecond
	handshakeBackoffMax = time.Second
)

// retry says whether and how a failed session attempt is tried again.
type retry int

const (
	noRetry retry = iota
	retryDial
	retryHandshake
)

// clockSkew is how far the wall clock may be from the orchestrator's before
// a job sets it: far below what signatures tolerate, far above jitter.
const clockSkew = time.Second

// syncClock sets the wall clock from the job's timestamp when it is off.
func (w *Worker) syncClock(job protocol.Job) {
	if w.SetClock == nil || job.NowUnixNS <= 0 {
		return
	}
	now := time.Unix(0, job.NowUnixNS)
	if d := time.Since(now); d > -clockSkew && d < clockSkew {
		return
	}
	log := w.Log
	if log == nil {
		log = slog.Default()
	}
	if err := w.SetClock(now); err != nil {
		log.Warn("could not set the wall clock from the orchestrator's", "err", err)
		return
	}
	log.Debug("wall clock set from the orchestrator's", "now", now.UTC())
}

// DefaultSecretsDir is where functions find their secrets, as on OpenFaaS.
const DefaultSecretsDir = sandbox.DefaultSecretsDir

// Outcome is what the worker should do when Run returns.
type Outcome struct {
	Action string // protocol.CmdPowerOff or protocol.CmdReboot
	Reason string
}

// Run connects to the orchestrator and serves jobs until told to power off
// or reboot, or until the orchestrator is silent for the failsafe time. It
// returns what to do next; it never returns without an Outcome. A session
// that fails before the orchestrator's first frame (the dial refused, the
// handshake cut: the port full of strangers' connections, the orchestrator
// restarting) is tried again, with backoff, for DialRetry (default: the
// failsafe time), rather than powering off on the first EOF.
func (w *Worker) Run(ctx context.Context) Outcome {
	if w.Clock == nil {
		w.Clock = Uptime
	}
	if w.DialRetry == 0 {
		w.DialRetry = w.Config.Failsafe
	}
	if w.Log == nil {
		w.Log = slog.Default()
	}
	deadline := w.now().Add(w.DialRetry)
	backoff := time.Duration(0)
	for attempt := 1; ; attempt++ {
		out, again := w.session(ctx)
		if again == noRetry {
			return out
		}
		if ctx.Err() != nil {
			return Outcome{protocol.CmdPowerOff, "stopped: " + context.Cause(ctx).Error()}
		}
		wait := dialRetryEvery
		if again == retryHandshake {
			backoff = min(max(2*backoff, handshakeBackoffMin), handshakeBackoffMax)
			wait = backoff
		}
		if w.now().Add(wait).After(deadline) {
			return Outcome{protocol.CmdPowerOff, fmt.Sprintf("no session with the orchestrator %s within %s (%d attempts); last: %s",
				w.Config.Orch, w.DialRetry, attempt, out.Reason)}
		}
		level := slog.LevelWarn
		if again == retryDial {
			level = slog.LevelDebug // the orchestrator not up yet: routine
		}
		w.Log.Log(ctx, level, "no session with the orchestrator yet; retrying", "addr", w.Config.Orch,
			"attempt", attempt, "err", out.Reason, "retry_in", wait)
		if err := w.sleep(ctx, wait); err != nil {
			return Outcome{protocol.CmdPowerOff, "stopped: " + context.Cause(ctx).Error()}
		}
	}
}

// connectionCut reports whether err is the connection ending or timing out, which
// a new connection may mend, rather than a peer that spoke wrongly (a bad
// MAC, another protocol: an impostor, never retried into).
func connectionCut(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrClosedPipe) ||
		(errors.As(err, &ne) && ne.Timeout())
}

func (w *Worker) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

func (w *Worker) sleep(ctx context.Context, d time.Duration) error {
	if w.Sleep != nil {
		return w.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// session is one connection to the orchestrator: dial, handshake, then
// jobs until told to stop. It says whether a failure is worth retrying:
// only one before the orchestrator's first frame is.
func (w *Worker) session(ctx context.Context) (Outcome, retry) {
	conn, err := w.dial(ctx)
	if err != nil {
		return Outcome{protocol.CmdPowerOff, fmt.Sprintf("orchestrator %s unreachable: %v", w.Config.Orch, err)}, retryDial
	}
	defer conn.Close()
	// Cancelling ctx pulls the plug: it closes the connection under any read.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	w.Boot.ConnectedMS = w.Clock()

	// A watchdog lives no longer than the session its calls came on.
	defer w.stopWatchdog()
	hello := protocol.Hello{
		WorkerID: w.Config.ID, Arch: goruntime.GOARCH, Boot: w.Boot,
		Functions: append(functions.Names(), functions.UserNames(w.Env.FunctionsDir)...),
		Bundles:   w.bundles().Held(),
	}
	conn.SetDeadline(time.Now().Add(w.Config.Failsafe))
	pc, err := w.handshake(conn, hello)
	if err != nil {
		again := noRetry // no retry mends a missing key or another protocol
		if connectionCut(err) {
			again = retryHandshake
		}
		return Outcome{protocol.CmdPowerOff, err.Error()}, again
	}
	conn.SetDeadline(time.Time{})
	w.Log.Info("connected to the orchestrator", "addr", w.Config.Orch, "id", w.Config.ID,
		"init_ms", w.Boot.InitMS, "network_ms", w.Boot.NetworkMS, "connected_ms", w.Boot.ConnectedMS)
	ship, stopShip := w.shipLogs(ctx, conn, pc)
	var gate sync.Mutex // orders the idle release below and a job's hold
	jobs := 0
	if stopShip != nil {
		defer stopShip()
		// The first job usually follows the hello at once: the log waits
		// for its result, unless none comes soon (a worker kept ready).
		idle := time.AfterFunc(logIdleStart, func() {
			gate.Lock()
			defer gate.Unlock()
			if jobs == 0 {
				w.Logs.Release()
			}
		})
		defer idle.Stop()
	}
	if w.Connected != nil && !w.connectedRan {
		w.connectedRan = true
		go w.Connected()
	}
	heard := false // a frame from the orchestrator: the session is up
	for {
		// Failsafe: a silent orchestrator powers the worker off.
		conn.SetReadDeadline(time.Now().Add(w.Config.Failsafe))
		typ, body, err := pc.Receive()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return Outcome{protocol.CmdPowerOff, fmt.Sprintf("failsafe: no word from the orchestrator for %s", w.Config.Failsafe)}, noRetry
			}
			out := Outcome{protocol.CmdPowerOff, fmt.Sprintf("orchestrator connection: %v", err)}
			if !heard && connectionCut(err) && ctx.Err() == nil {
				// The hello was dropped (refused, or the connection cut
				// before the orchestrator read it): try again.
				return out, retryHandshake
			}
			return out, noRetry
		}
		heard = true
		switch typ {
		case protocol.TypeCommand:
			var c protocol.Command
			if err := json.Unmarshal(body, &c); err != nil {
				return Outcome{protocol.CmdPowerOff, fmt.Sprintf("malformed command: %v", err)}, noRetry
			}
			switch c.Action {
			case protocol.CmdPowerOff, protocol.CmdReboot:
				return Outcome{c.Action, "told by the orchestrator"}, noRetry
			case protocol.CmdWait:
				continue
			default:
				return Outcome{protocol.CmdPowerOff, fmt.Sprintf("unknown command %q", c.Action)}, noRetry
			}
		case protocol.TypeJob:
			gate.Lock()
			jobs++
			if ship != nil {
				w.Logs.Hold() // the job has the worker to itself; its log waits
			}
			gate.Unlock()
			var job protocol.Job
			res := protocol.Result{}
			if err := json.Unmarshal(body, &job); err != nil {
				res.Error = fmt.Sprintf("malformed job: %v", err)
			} else {
				var serr error
				res, serr = w.runJob(ctx, job, w.fetcher(conn, pc))
				if serr != nil && ctx.Err() == nil {
					return Outcome{protocol.CmdPowerOff, serr.Error()}, noRetry
				}
			}
			if ctx.Err() != nil {
				// Stopped from outside (the plug was pulled): no result.
				return Outcome{protocol.CmdPowerOff, "stopped: " + context.Cause(ctx).Error()}, noRetry
			}
			// For the worker's log: what ran and how it ended, never what
			// the function said (that goes back with the result only).
			w.Log.Info("job done", "invocation", res.ID, "function", res.Function, "exec_ms", res.ExecMS,
				"failed", res.Error != "", "timed_out", res.TimedOut)
			conn.SetWriteDeadline(time.Now().Add(w.Config.Failsafe))
			if err := pc.Send(protocol.TypeResult, res); err != nil {
				return Outcome{protocol.CmdPowerOff, err.Error()}, noRetry
			}
			if ship != nil {
				w.Logs.Release()
			}
			if res.TimedOut {
				// The overrunning function may still hold the CPU; only a
				// reboot gives the next job a clean worker.
				return Outcome{protocol.CmdPowerOff, "job " + res.ID + " timed out"}, noRetry
			}
		default:
			return Outcome{protocol.CmdPowerOff, fmt.Sprintf("unexpected %q message", typ)}, noRetry
		}
	}
}

// logIdleStart is how long a session's log waits for a first job before it
// is sent anyway.
const logIdleStart = 100 * time.Millisecond

// logFlushWait bounds how long the end of a session waits for the log
// still held to go (a job done in microseconds would otherwise power the
// worker off before its boot's log left).
const logFlushWait = 500 * time.Millisecond

// shipLogs starts sending w.Logs over the session, between the jobs (the
// session holds the shipper while a job runs): the shipper's sends take
// turns with the session's (protocol.Conn), a batch at most
// protocol.MaxLogBatch bytes, at a bounded rate; lines that come faster
// are dropped oldest first and counted. It returns the shipper and what
// stops it, after at most logFlushWait for what is held (nil: nothing to
// ship, or the orchestrator takes no log frames).
func (w *Worker) shipLogs(ctx context.Context, conn net.Conn, pc *protocol.Conn) (*shiplog.Shipper, func()) {
	if w.Logs == nil || !pc.Accepts(protocol.FeatureLog) {
		return nil, nil
	}
	s := &shiplog.Shipper{Ring: w.Logs}
	if t := w.LogShipper; t != nil {
		s.Rate, s.Burst, s.Linger, s.Now, s.Sleep = t.Rate, t.Burst, t.Linger, t.Now, t.Sleep
	}
	s.Send = func(b protocol.LogBatch) error {
		conn.SetWriteDeadline(time.Now().Add(w.Config.Failsafe))
		return pc.Send(protocol.TypeLog, b)
	}
	w.Logs.Hold() // until the first result, or logIdleStart without a job (session)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	return s, func() {
		mark := w.Logs.Added()
		w.Logs.Release()
		s.Flush()
		for end := time.Now().Add(logFlushWait); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			if w.Logs.Sent(mark) || ctx.Err() != nil {
				break
			}
		}
		cancel() // a frame being sent is finished, not cut
		select {
		case <-done:
		case <-time.After(logFlushWait):
			conn.Close() // a send stuck on a peer that stopped reading ends now
			<-done
		}
	}
}

// ErrNoKey means the worker has no key of its own: it cannot authenticate.
var ErrNoKey = errors.New("no worker key: QEMU workers get " + protocol.KeyPath +
	" from the orchestrator, boards read the key area of the card mfbuild wrote")

// handshake opens the session with the worker's own key (protocol
// version 2).
func (w *Worker) handshake(conn net.Conn, hello protocol.Hello) (*protocol.Conn, error) {
	if w.Key == nil {
		return nil, ErrNoKey
	}
	return protocol.ClientHandshake(conn, w.Key, hello)
}

// TakeKey reads the worker's key file and deletes it, so nothing started
// later (functions run contained and could not see it anyway) finds it.
// A missing file is (nil, nil): a board reads its card instead (CardKey).
func TakeKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("worker key %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return nil, fmt.Errorf("worker key %s: delete after reading: %w", path, err)
	}
	return protocol.DecodeKey(b)
}

// dial makes one attempt to reach the orchestrator: a TCP connection, or
// the virtio-serial port mf.orch names (vport:NAME, OpenPort).
func (w *Worker) dial(ctx context.Context) (net.Conn, error) {
	if w.Dial != nil {
		return w.Dial(ctx, w.Config.Orch)
	}
	if name, ok := bootparams.PortName(w.Config.Orch); ok {
		return OpenPort(PortsDir, DevDir, name)
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	return d.DialContext(dctx, "tcp", w.Config.Orch)
}

// runJob runs one job under its deadline. A panicking function becomes an
// error result; an overrunning one is reported as timed out. The error is
// the session's (a bundle fetch the connection failed): no result can go.
func (w *Worker) runJob(ctx context.Context, job protocol.Job, fetch Fetch) (protocol.Result, error) {
	w.syncClock(job)
	res := protocol.Result{ID: job.ID, Function: job.Function}
	timeout := DefaultJobTimeout
	if job.TimeoutMS > 0 {
		timeout = time.Duration(job.TimeoutMS) * time.Millisecond
	}
	env := w.Env
	if job.Services != nil {
		env.Services = job.Services
	}
	env.ProcessEnv = job.Env
	// Secrets live on a tmpfs inside the function's sandbox, gone with it.
	for name := range job.Secrets {
		if !sandbox.ValidSecretName(name) {
			res.Error = fmt.Sprintf("secrets: bad secret name %q", name)
			return res, nil
		}
	}
	env.Secrets, env.SecretsDir = job.Secrets, w.SecretsDir
	// The kept watchdog serves only the next call of its own function;
	// before anything else runs (or its bundle is replaced), it stops.
	if w.watchdog != nil && w.watchdog.key != watchdogKey(job) {
		w.stopWatchdog()
	}
	log := functions.NewTail(protocol.MaxLog)
	env.Log = log
	var fn functions.Func // nil: look job.Function up
	if job.Bundle != nil {
		dir, cfg, err := w.bundles().Prepare(*job.Bundle, fetch)
		if errors.Is(err, errSession) {
			return res, err
		}
		if err != nil {
			res.Error = fmt.Sprintf("%s: %v", job.Function, err)
			return res, nil
		}
		if cfg.Watchdog() {
			return w.callWatchdog(ctx, job, dir, env, timeout), nil
		}
		fn = functions.Image(job.Function, dir)
	}
	start := time.Now()
	out, err := runFunc(ctx, env, job.Function, fn, job.Args, timeout)
	res.ExecMS = float64(time.Since(start).Microseconds()) / 1000
	res.Log = log.String()
	if err != nil {
		res.Error = err.Error()
		res.TimedOut = errors.Is(err, context.DeadlineExceeded)
		return res, nil
	}
	res.Result = out
	return res, nil
}

// RunFunction looks up name and runs it with args under timeout, returning
// the JSON-encoded result. It is what both the worker and `mfinit invoke` use.
func RunFunction(ctx context.Context, env functions.Env, name string, args json.RawMessage, timeout time.Duration) (json.RawMessage, error) {
	return runFunc(ctx, env, name, nil, args, timeout)
}

// runFunc runs fn, or the function name looks up when fn is nil.
func runFunc(ctx context.Context, env functions.Env, name string, fn functions.Func, args json.RawMessage, timeout time.Duration) (json.RawMessage, error) {
	if fn == nil {
		var err error
		fn, err = functions.Lookup(name)
		if err != nil {
			user, ok := functions.LookupUser(env.FunctionsDir, name)
			if !ok {
				return nil, err
			}
			fn = user
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type outcome struct {
		v   any
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- outcome{nil, fmt.Errorf("%s panicked: %v\n%s", name, p, debug.Stack())}
			}
		}()
		v, err := fn(ctx, env, args)
		done <- outcome{v, err}
	}()
	select {
	case o := <-done:
		if o.err != nil {
			if ctx.Err() != nil && errors.Is(o.err, context.DeadlineExceeded) {
				return nil, fmt.Errorf("%s timed out after %s: %w", name, timeout, context.DeadlineExceeded)
			}
			return nil, o.err
		}
		b, err := json.Marshal(o.v)
		if err != nil {
			return nil, fmt.Errorf("%s: result not encodable as JSON: %w", name, err)
		}
		return b, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("%s timed out after %s: %w", name, timeout, context.DeadlineExceeded)
		}
		return nil, ctx.Err()
	}
}
