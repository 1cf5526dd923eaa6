package functions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/runtime/sandbox"
)

// An OpenFaaS watchdog image (of-watchdog in http mode, or the classic
// watchdog: the entrypoint is fwatchdog) serves HTTP instead of reading
// stdin: the worker starts it once, in the sandbox, and forwards each call
// to its port on 127.0.0.1. The sandbox has no network namespace of its
// own, so the watchdog listens on the worker's loopback; only one runs at a
// time, so its port is free.

// DefaultWatchdogPort is where a watchdog listens when its image's
// environment sets no port, as on OpenFaaS.
const DefaultWatchdogPort = 8080

// MaxHTTPBody bounds a watchdog's response body: it goes back in one
// protocol frame, base64-encoded (4/3 of its size).
const MaxHTTPBody = protocol.MaxFrame / 2

// ErrWatchdog means a watchdog function could not answer: it exited, never
// listened on its port, or answered with more than MaxHTTPBody. The job's
// log (Result.Log) holds what the watchdog wrote.
var ErrWatchdog = errors.New("watchdog function failed")

// readyPollMin and readyPollMax pace the wait for the watchdog's port:
// nothing tells a process outside the sandbox that a socket listens, so it
// dials, often at first (a Go watchdog listens within milliseconds).
const (
	readyPollMin = 2 * time.Millisecond
	readyPollMax = 50 * time.Millisecond
)

// Watchdog is a watchdog image's process, running contained until Stop.
type Watchdog struct {
	name   string
	port   int
	log    *logPipe
	stop   context.CancelFunc
	done   chan struct{} // closed when the process has ended
	err    error         // sandbox.Run's, set before done closes
	client *http.Client
	ready  bool // its port has accepted a connection
	// answered: its function has answered a call (see starting).
	answered bool
	served   int64 // the log's mark at the end of the last call
}

// StartWatchdog starts the watchdog image laid out in dir (config.json and
// rootfs/, as Image) with env's job environment and secrets, and returns
// at once: Call waits for its port. Its stdout and stderr are its log.
func StartWatchdog(name, dir string, env Env) (*Watchdog, error) {
	spec, _, err := imageSpec(name, dir, env)
	if err != nil {
		return nil, err
	}
	port, err := watchdogPort(spec.Env)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// A port that answers before the watchdog started is someone else's:
	// calls must never go there.
	if c, err := net.DialTimeout("tcp", addr(port), time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: port %d on the worker is in use before its watchdog started: %w", name, port, ErrWatchdog)
	}
	lp, out, err := newLogPipe(protocol.MaxLog)
	if err != nil {
		return nil, fmt.Errorf("%s: watchdog log: %w", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watchdog{name: name, port: port, log: lp, stop: cancel, done: make(chan struct{}),
		client: &http.Client{
			Transport: &http.Transport{
				// The response goes back as the watchdog sent it: no
				// transparent gzip, no proxy from the environment.
				DisableCompression: true,
				Proxy:              nil,
			},
			// Redirects are the caller's to follow.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}}
	go func() {
		defer close(w.done)
		err := sandbox.Run(ctx, spec, nil, out, out)
		out.Close() // every writer is gone: the log pipe ends
		if errors.Is(err, sandbox.ErrUncontained) {
			err = fmt.Errorf("container image functions need containment: %w", err)
		}
		w.err = err
	}()
	return w, nil
}

// watchdogPort is the port in the process environment (the last "port="
// wins, as in exec), or DefaultWatchdogPort.
func watchdogPort(env []string) (int, error) {
	port := DefaultWatchdogPort
	for _, kv := range env {
		v, ok := strings.CutPrefix(kv, "port=")
		if !ok {
			continue
		}
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return 0, fmt.Errorf("the image's port=%q is not a TCP port: set it to 1-65535 (default %d)", v, DefaultWatchdogPort)
		}
		port = p
	}
	return port, nil
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// Port is the port the watchdog listens on.
func (w *Watchdog) Port() int { return w.port }

// Exited reports whether the watchdog's process has ended.
func (w *Watchdog) Exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// Stop kills the watchdog and everything it started, and waits for them.
func (w *Watchdog) Stop() {
	w.stop()
	<-w.done
	w.client.CloseIdleConnections()
	w.log.close()
}

// Call forwards req to the watchdog (waiting for its port first, within
// ctx) and returns its response as it came, with what the watchdog wrote
// since the previous call (its start-up, for the first), at most
// protocol.MaxLog bytes. A watchdog that exits, or never listens before
// ctx ends, is ErrWatchdog.
func (w *Watchdog) Call(ctx context.Context, req *protocol.HTTPRequest) (*protocol.HTTPResponse, string, error) {
	from := w.served
	resp, err := w.call(ctx, req)
	// What it wrote before answering is in the pipe by now: take it.
	w.log.drain()
	w.served = w.log.tail.Mark()
	return resp, w.log.tail.Since(from), err
}

func (w *Watchdog) call(ctx context.Context, req *protocol.HTTPRequest) (*protocol.HTTPResponse, error) {
	if err := w.waitReady(ctx); err != nil {
		return nil, err
	}
	hreq, err := w.request(ctx, req)
	if err != nil {
		return nil, err
	}
	resp, err := w.client.Do(hreq)
	for err == nil && !w.answered && starting(resp) {
		// of-watchdog listens before its function does: until the function
		// has answered once, the watchdog's own 5xx means "not up yet", and
		// the request is sent again (within the job's time).
		io.Copy(io.Discard, io.LimitReader(resp.Body, MaxHTTPBody))
		resp.Body.Close()
		if err := w.pause(ctx, readyPollMax); err != nil {
			if w.Exited() {
				return nil, w.exitError()
			}
			return nil, fmt.Errorf("%s: its function did not come up behind its watchdog within the job's time (%v): %w", w.name, err, ErrWatchdog)
		}
		if hreq, err = w.request(ctx, req); err != nil {
			return nil, err
		}
		resp, err = w.client.Do(hreq)
	}
	if err != nil {
		if w.Exited() {
			return nil, w.exitError()
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: no answer from its watchdog: %w", w.name, ctx.Err())
		}
		return nil, fmt.Errorf("%s: calling its watchdog: %v: %w", w.name, err, ErrWatchdog)
	}
	w.answered = true
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxHTTPBody+1))
	if err != nil {
		return nil, fmt.Errorf("%s: reading its watchdog's answer: %v: %w", w.name, err, ErrWatchdog)
	}
	if len(body) > MaxHTTPBody {
		return nil, fmt.Errorf("%s: the answer's body is larger than %d bytes, the most a worker returns: %w", w.name, MaxHTTPBody, ErrWatchdog)
	}
	return &protocol.HTTPResponse{Status: resp.StatusCode, Header: resp.Header, Body: body}, nil
}

// request is req as an HTTP request to the watchdog's port: the caller's
// method, path, query, headers and body.
func (w *Watchdog) request(ctx context.Context, req *protocol.HTTPRequest) (*http.Request, error) {
	p := req.Path
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	path, err := url.PathUnescape(p)
	if err != nil {
		return nil, fmt.Errorf("%s: request path %q: %w", w.name, req.Path, err)
	}
	// Built from parts, never parsed from a string: the path cannot name
	// another host.
	u := &url.URL{Scheme: "http", Host: addr(w.port), Path: path, RawPath: p, RawQuery: req.Query}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	hreq, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(req.Body))
	if err != nil {
		return nil, fmt.Errorf("%s: request: %w", w.name, err)
	}
	hreq.URL = u
	for k, vs := range req.Header {
		for _, v := range vs {
			hreq.Header.Add(k, v)
		}
	}
	if h := hreq.Header.Get("Host"); h != "" {
		hreq.Host = h
	}
	return hreq, nil
}

// waitReady waits until the watchdog's port accepts, its process ends, or
// ctx ends.
func (w *Watchdog) waitReady(ctx context.Context) error {
	if w.Exited() {
		return w.exitError()
	}
	wait := readyPollMin
	for !w.ready {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr(w.port))
		if err == nil {
			c.Close()
			w.ready = true
			break
		}
		if err := w.pause(ctx, wait); err != nil {
			if w.Exited() {
				return w.exitError()
			}
			return fmt.Errorf("%s: its watchdog did not listen on port %d within the job's time (%v): %w", w.name, w.port, err, ErrWatchdog)
		}
		wait = min(2*wait, readyPollMax)
	}
	return nil
}

// pause waits d, unless the watchdog exits (errExited) or ctx ends (its
// error) first.
func (w *Watchdog) pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.done:
		return errExited
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

var errExited = errors.New("the watchdog exited")

// starting reports whether resp is the watchdog's own 5xx (it marks its
// answers X-OpenFaaS-Internal), not its function's: of-watchdog in http
// mode answers so while its function does not listen yet.
func starting(resp *http.Response) bool {
	return resp.StatusCode >= 500 && resp.Header.Get("X-OpenFaaS-Internal") != ""
}

func (w *Watchdog) exitError() error {
	<-w.done
	if w.err != nil {
		return fmt.Errorf("%s: its watchdog exited: %v (its log is the job's log): %w", w.name, w.err, ErrWatchdog)
	}
	return fmt.Errorf("%s: its watchdog exited (its log is the job's log): %w", w.name, ErrWatchdog)
}

// logPipe is the watchdog's stdout and stderr: a pipe read into a Tail by
// a goroutine, where drain takes whatever the pipe holds at once, so a call
// gets all the watchdog wrote before it answered. Reads happen under mu,
// one read to one Tail write, so drain cannot miss bytes a read took.
type logPipe struct {
	tail *Tail
	mu   sync.Mutex
	r    *os.File
	rc   syscall.RawConn
	buf  []byte
	done chan struct{} // the reader has stopped
}

// newLogPipe returns the pipe and its write end, for the process.
func newLogPipe(max int) (*logPipe, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	rc, err := r.SyscallConn()
	if err != nil {
		r.Close()
		w.Close()
		return nil, nil, err
	}
	lp := &logPipe{tail: NewTail(max), r: r, rc: rc, buf: make([]byte, 32<<10), done: make(chan struct{})}
	go lp.read()
	return lp, w, nil
}

// readOnce reads what the pipe holds into the tail; more is false at the
// end of the pipe, wait is true when it is empty for now.
func (lp *logPipe) readOnce(fd uintptr) (more, wait bool) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	n, err := unix.Read(int(fd), lp.buf)
	if err == unix.EAGAIN || err == unix.EINTR {
		return true, true
	}
	if n <= 0 {
		return false, false
	}
	lp.tail.Write(lp.buf[:n])
	return true, false
}

func (lp *logPipe) read() {
	defer close(lp.done)
	for {
		more := true
		err := lp.rc.Read(func(fd uintptr) bool {
			var wait bool
			more, wait = lp.readOnce(fd)
			return !wait
		})
		if err != nil || !more {
			return
		}
	}
}

// drain reads whatever the pipe holds now, without waiting for more.
func (lp *logPipe) drain() {
	lp.rc.Control(func(fd uintptr) {
		for {
			if more, wait := lp.readOnce(fd); !more || wait {
				return
			}
		}
	})
}

// close ends the reader once the pipe's writers are gone.
func (lp *logPipe) close() {
	<-lp.done
	lp.r.Close()
}
