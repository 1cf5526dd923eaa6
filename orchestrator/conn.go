package orchestrator

import (
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator/workerlog"
	"github.com/microfaas/microfaas/protocol"
)

// Worker connections: one goroutine per connection reads (the hello, then
// results) and posts events to the loop, and answers the worker's bundle
// requests itself (bundlefetch.go); a writer goroutine sends what the
// loop's actions queue, so a slow worker never blocks the loop.

// helloTimeout bounds how long a new connection may take to authenticate.
const helloTimeout = 10 * time.Second

// writeTimeout bounds one message write to a worker.
const writeTimeout = 10 * time.Second

type outMsg struct {
	typ string
	msg any
}

// workerConn is the loop's handle on one worker connection.
type workerConn struct {
	c  net.Conn
	pc *protocol.Conn

	mu     sync.Mutex
	closed bool
	out    chan outMsg
	// bundle is the bundle of the job last sent, until its result
	// arrives (endJob): the one bundle the worker may fetch.
	bundle *protocol.BundleRef
}

// outMax bounds messages waiting for one worker; the protocol has at most
// two in flight (a command, then a job).
const outMax = 8

func newWorkerConn(c net.Conn, pc *protocol.Conn) *workerConn {
	wc := &workerConn{c: c, pc: pc, out: make(chan outMsg, outMax)}
	go wc.writer()
	return wc
}

func (wc *workerConn) writer() {
	for m := range wc.out {
		wc.c.SetWriteDeadline(time.Now().Add(writeTimeout))
		// A bundle chunk goes as a header frame, then its raw bytes.
		if err := wc.pc.Send(m.typ, m.msg); err != nil {
			break // the reader sees the connection fail
		}
	}
	wc.c.Close()
}

// send queues a message; it never blocks. A worker that lets outMax
// messages pile up is cut off.
func (wc *workerConn) send(typ string, msg any) {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.closed {
		return
	}
	if j, ok := msg.(protocol.Job); ok {
		wc.bundle = j.Bundle
	}
	select {
	case wc.out <- outMsg{typ, msg}:
	default:
		wc.closed = true
		close(wc.out)
	}
}

// jobBundle is the bundle of the job the worker runs, nil if none.
func (wc *workerConn) jobBundle() *protocol.BundleRef {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	return wc.bundle
}

// endJob forgets the job's bundle: its result arrived.
func (wc *workerConn) endJob() {
	wc.mu.Lock()
	wc.bundle = nil
	wc.mu.Unlock()
}

// close sends what is queued, then closes the connection.
func (wc *workerConn) close() {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if !wc.closed {
		wc.closed = true
		close(wc.out)
	}
}

// Serve accepts worker connections on ln until it is closed. The worker
// port is protocol.Acceptor's: each worker proves its own key (derived from
// the cluster secret and its id) against a fresh challenge, from its own
// address where it has a fixed one; strangers are bounded in number, time
// and bytes; accept errors are logged and retried.
func (o *Orchestrator) Serve(ln net.Listener) error {
	return o.acc.Serve(ln)
}

// newAcceptor is the handshake of every worker session: on the worker port
// (Serve) and on a QEMU worker's own virtio-serial port (New registers it
// with power.SessionSource controllers).
func (o *Orchestrator) newAcceptor() *protocol.Acceptor {
	a := &protocol.Acceptor{Keys: protocol.ClusterKeys(o.cfg.Cluster.SecretBytes(), workerAddrs(o.cfg.Cluster)),
		Handle: o.serveSession, HelloTimeout: helloTimeout, Log: o.log}
	if o.cfg.WorkerLogs != nil {
		// Workers ship their logs only to an orchestrator that keeps them.
		a.Accepts = []string{protocol.FeatureLog}
	}
	return a
}

// workerAddrs maps each worker id to the address its connections must come
// from: its IP, except for QEMU workers behind user-mode networking, whose
// connections come from the host's loopback.
func workerAddrs(c *cluster.Cluster) map[string]string {
	addrs := map[string]string{}
	for _, w := range c.Workers {
		addrs[w.ID] = w.IP
		if w.UsesUserNet() {
			addrs[w.ID] = ""
		}
	}
	return addrs
}

// serveSession runs one authenticated worker session.
func (o *Orchestrator) serveSession(c net.Conn, pc *protocol.Conn, h protocol.Hello) {
	remote := c.RemoteAddr().String()
	wc := newWorkerConn(c, pc)
	reply := make(chan helloReply, 1)
	var logs *workerlog.Boot // the boot's log file, for the log frames
	if o.cfg.WorkerLogs != nil {
		logs = o.cfg.WorkerLogs.Connected(h.WorkerID)
	}
	if !o.post(evHello{worker: h.WorkerID, functions: h.Functions, bundles: h.Bundles, boot: h.Boot, logBoot: logs.N(),
		remote: remote, conn: wc, reply: reply}) {
		wc.close()
		return
	}
	var r helloReply
	select {
	case r = <-reply:
	case <-o.stopped:
		wc.close()
		return
	}
	if !r.ok {
		return // the loop sends the power-off and closes
	}
	// Between a job and its result the worker may fetch the job's
	// bundle; the reads happen here, never in the loop.
	bf := &bundleFetch{o: o, wc: wc, worker: h.WorkerID}
	defer bf.endJob()
	lost := func(err error) {
		o.post(evConnLost{h.WorkerID, r.session, err})
		wc.close()
	}
	for {
		typ, body, err := pc.Receive()
		if err != nil {
			lost(err)
			return
		}
		switch typ {
		case protocol.TypeResult:
			var res protocol.Result
			if err := json.Unmarshal(body, &res); err != nil {
				lost(fmt.Errorf("malformed result: %w", err))
				return
			}
			bf.endJob()
			if !o.post(evResult{h.WorkerID, r.session, res}) {
				wc.close()
				return
			}
		case protocol.TypeLog:
			// The worker's own log, at any time: straight to its boot's
			// file (capped there), never through the loop.
			var lb protocol.LogBatch
			if err := json.Unmarshal(body, &lb); err != nil {
				lost(fmt.Errorf("malformed log frame: %w", err))
				return
			}
			if err := lb.Check(); err != nil {
				lost(fmt.Errorf("worker %s: %w", h.WorkerID, err))
				return
			}
			logs.WriteBatch(lb)
		case protocol.TypeBundleRequest:
			var req protocol.BundleRequest
			if err := json.Unmarshal(body, &req); err != nil {
				lost(fmt.Errorf("malformed bundle request: %w", err))
				return
			}
			if err := bf.serve(req); err != nil {
				lost(err)
				return
			}
		default:
			lost(fmt.Errorf("expected a result, a bundle request or a log frame, got %q", typ))
			return
		}
	}
}
