package orchestrator

import (
	"bytes"
	"context"
	"crypto/cipher"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/microfaas/microfaas/orchestrator/state"
)

// A shared queue (docs/scale-out.md): several orchestrators, each with its
// own workers, take invocations from one durable queue (NATS JetStream,
// orchestrator/natsq). Submit publishes to the queue instead of the local
// one and returns once the queue has it; each orchestrator pulls only as
// many invocations as its workers can take and runs them through its usual
// machine; the result is stored in the queue's result store (the first
// result of an id wins) before the message is acknowledged, and whoever
// waits for it, on any orchestrator, gets it from there. The queue is the
// orchestrator's Store: finished writes store results, pending writes are
// not needed (a dead orchestrator's messages are redelivered to another).

// SharedQueue is a queue of invocations that several orchestrators share.
type SharedQueue interface {
	// Store: Commit stores finished invocations' results and acknowledges
	// their messages (pending writes are ignored); Get finds an
	// invocation queued or finished on any orchestrator; Pending is empty.
	Store
	// Publish queues inv for whichever orchestrator has a worker first,
	// once: a second publish of the same id is not queued again. It
	// returns once the queue has it on disk; ErrQueueDown when the queue
	// cannot be reached (soon, not after a long wait), ErrQueueFull when
	// the queue is at its bound.
	Publish(ctx context.Context, inv *Invocation) error
	// Start begins pulling invocations for host and watching results; it
	// returns at once.
	Start(host QueueHost) error
	// Knows reports whether invocations of function were queued before
	// (by any orchestrator): one this orchestrator's workers lack is
	// accepted all the same, for the orchestrators whose workers run it.
	Knows(function string) bool
	// Started says a delivered invocation started on one of this
	// orchestrator's workers, so that every orchestrator reports it
	// running. It must not block.
	Started(inv *Invocation)
	// GiveBack returns a delivered invocation that this orchestrator's
	// workers cannot run to the queue, for another orchestrator, at once;
	// also one whose worker was lost mid-job (Started was called for it),
	// whose retry is the queue's next delivery, counting this start. It
	// must not block.
	GiveBack(id string)
	// Installation is every instance's last published status (those
	// that stopped publishing drop out) and the invocations the queue
	// holds, queued or running.
	Installation(ctx context.Context) ([]InstanceStatus, uint64, error)
}

// InstanceStatus is one instance's Status as the shared queue publishes it.
type InstanceStatus struct {
	Name string    `json:"name"`
	At   time.Time `json:"at"`
	Status
}

// QueueHost is what a SharedQueue needs of the orchestrator it feeds.
type QueueHost interface {
	// Runners says which workers can run each of functions: for
	// functions[i], runners[i] lists the indexes (0 to workers-1) of the
	// workers that have not failed and can run it (deployed for their
	// architecture, listed in their last hello, or any function the
	// orchestrator knows for one not booted yet). The function "" is any:
	// every worker that has not failed. workers is 0 once it is shutting
	// down. The queue pulls a function's invocations only as long as
	// one more fits on a distinct runner beside those held here.
	Runners(functions []string) (workers int, runners [][]int)
	// Deliver hands over an invocation pulled from the queue to run here.
	// Its Attempts are the starts before this delivery (the redelivery
	// count, less the deliveries given back unstarted), so
	// Config.MaxAttempts bounds starts across orchestrators.
	Deliver(inv *Invocation)
	// Awaits reports whether a caller here waits for invocation id.
	Awaits(id string) bool
	// Result hands over a result stored by any orchestrator.
	Result(inv *Invocation)
	// Recheck says results may have been missed (the queue was
	// unreachable for a while): the orchestrator looks up every result
	// its callers wait for.
	Recheck()
	// Status is this instance's status, which the queue publishes for
	// the others (Installation).
	Status() Status
}

// ErrQueueDown means the shared queue cannot be reached: the invocation
// was not accepted (HTTP 503 with Retry-After); submit it again.
var ErrQueueDown = errors.New("shared queue unreachable: try again shortly")

// ErrBadID is an invocation id a caller chose that cannot be used.
var ErrBadID = errors.New("bad invocation id")

// validID is what a caller-chosen invocation id may be (a NATS subject
// token, a bbolt key and a URL path segment alike).
var validID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// evPulled: an invocation pulled from the shared queue, to run here.
type evPulled struct{ inv *Invocation }

// pulled queues an invocation a shared queue delivered. One that has had
// its attempts (every orchestrator that started it stopped before it
// finished: a poison invocation) ends failed instead of running again.
func (m *machine) pulled(inv *Invocation) {
	if m.closed {
		m.abandon(inv) // not acknowledged: the queue redelivers it
		return
	}
	m.live[inv.ID] = inv
	if inv.Attempts >= m.cfg.MaxAttempts {
		m.finish(inv, newError(ErrWorkerLost, "started %d times by orchestrators that stopped before it finished; gave up (it may stop whoever runs it)", inv.Attempts))
		m.emit(actRecord{inv})
		return
	}
	m.queue = append(m.queue, inv)
	m.dispatch()
}

// shared is an orchestrator's side of a shared queue: the callers waiting
// for results.
type shared struct {
	q       SharedQueue
	mu      sync.Mutex
	waiters map[string][]*Invocation
}

// startShared connects the orchestrator to cfg.Queue.
func (o *Orchestrator) startShared() error {
	o.shared = &shared{q: o.cfg.Queue, waiters: map[string][]*Invocation{}}
	return o.cfg.Queue.Start(queueHost{o})
}

// pollResults looks up the results of invocations waited for.
func (o *Orchestrator) pollResults() {
	s := o.shared
	s.mu.Lock()
	ids := make([]string, 0, len(s.waiters))
	for id := range s.waiters {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	for _, id := range ids {
		if inv, ok, err := s.q.Get(id); err == nil && ok && doneYet(inv) {
			o.sharedResult(inv)
		}
	}
}

func doneYet(inv *Invocation) bool {
	select {
	case <-inv.done:
		return true
	default:
		return false
	}
}

// queueHost is the orchestrator as a SharedQueue sees it.
type queueHost struct{ o *Orchestrator }

func (h queueHost) Runners(functions []string) (int, [][]int) {
	o := h.o
	o.mu.Lock()
	defer o.mu.Unlock()
	m := o.m
	if m.closed {
		return 0, make([][]int, len(functions))
	}
	runners := make([][]int, len(functions))
	for i, id := range m.order {
		w := m.workers[id]
		if w.state == state.Failed {
			continue
		}
		for j, f := range functions {
			if f == "" || m.canRun(w, f) {
				runners[j] = append(runners[j], i)
			}
		}
	}
	return len(m.order), runners
}

func (h queueHost) Deliver(inv *Invocation) {
	if inv.done == nil {
		inv.done = make(chan struct{})
	}
	h.o.post(evPulled{inv})
}

func (h queueHost) Awaits(id string) bool {
	s := h.o.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiters[id]) > 0
}

func (h queueHost) Result(inv *Invocation) { h.o.sharedResult(inv) }

func (h queueHost) Recheck() { go h.o.pollResults() }

func (h queueHost) Status() Status { return h.o.Status() }

// FullStatus is Status and, with a shared queue, every instance's status
// and the shared queue's depth (GET /status).
func (o *Orchestrator) FullStatus(ctx context.Context) Status {
	s := o.Status()
	if o.shared == nil {
		return s
	}
	ins, depth, err := o.shared.q.Installation(ctx)
	if err != nil {
		s.InstallationError = err.Error()
		return s
	}
	s.Instances, s.SharedQueueDepth = ins, &depth
	return s
}

// sharedResult releases the callers waiting for res's invocation.
func (o *Orchestrator) sharedResult(res *Invocation) {
	s := o.shared
	s.mu.Lock()
	ws := s.waiters[res.ID]
	delete(s.waiters, res.ID)
	s.mu.Unlock()
	if len(ws) == 0 {
		return
	}
	o.mu.Lock() // handleGet renders invocations under it
	for _, w := range ws {
		setResult(w, res)
		close(w.done)
	}
	o.mu.Unlock()
}

// setResult copies res's outcome and timeline into w, field by field: a
// caller may be reading w.done meanwhile.
func setResult(w, res *Invocation) {
	w.Function, w.Args, w.Timeout, w.Attempts, w.Worker, w.Boot = res.Function, res.Args, res.Timeout, res.Attempts, res.Worker, res.Boot
	w.Queued, w.PoweredOn, w.Connected, w.Started, w.Finished, w.PoweredOff = res.Queued, res.PoweredOn, res.Connected, res.Started, res.Finished, res.PoweredOff
	w.Result, w.HTTPResponse, w.Log, w.Err, w.TimedOut, w.ExecMS, w.Restarts = res.Result, res.HTTPResponse, res.Log, res.Err, res.TimedOut, res.ExecMS, res.Restarts
}

// await registers inv's caller for its result.
func (o *Orchestrator) await(inv *Invocation) {
	s := o.shared
	s.mu.Lock()
	s.waiters[inv.ID] = append(s.waiters[inv.ID], inv)
	s.mu.Unlock()
}

// unawait stops waiting for inv: it ends with err (the invocation itself
// stays queued). It reports false when its result came first.
func (o *Orchestrator) unawait(inv *Invocation, err error) bool {
	s := o.shared
	s.mu.Lock()
	ws := s.waiters[inv.ID]
	found := false
	for i, w := range ws {
		if w == inv {
			ws = append(ws[:i], ws[i+1:]...)
			found = true
			break
		}
	}
	if len(ws) == 0 {
		delete(s.waiters, inv.ID)
	} else {
		s.waiters[inv.ID] = ws
	}
	s.mu.Unlock()
	if found && err != nil {
		o.mu.Lock()
		inv.Err, inv.Finished = err, o.clock.Now()
		close(inv.done)
		o.mu.Unlock()
	}
	return found
}

// releaseWaiters ends every wait at shutdown: the invocations stay queued.
func (o *Orchestrator) releaseWaiters() {
	s := o.shared
	s.mu.Lock()
	var all []*Invocation
	for _, ws := range s.waiters {
		all = append(all, ws...)
	}
	s.mu.Unlock()
	for _, inv := range all {
		o.unawait(inv, newError(ErrClosed, "mforch shut down while the caller waited; the invocation stays queued: GET /invocations/%s on any instance", inv.ID))
	}
}

// submitShared publishes spec to the shared queue and returns once the
// queue has it. A caller-chosen id (spec.ID) already finished returns its
// result; one already queued is not queued again.
func (o *Orchestrator) submitShared(spec JobSpec) (*Invocation, error) {
	o.mu.Lock()
	closed, known := o.m.closed, o.m.isKnown(spec.Function)
	o.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if !known && !o.shared.q.Knows(spec.Function) {
		return nil, newError(ErrUnknownFunction, "%q: no worker image has it and it is not deployed (deploy it: faas-cli deploy or mforch deploy)", spec.Function)
	}
	now := o.clock.Now()
	inv := &Invocation{ID: spec.ID, Function: spec.Function, Args: spec.Args, Timeout: spec.Timeout,
		Env: spec.Env, Secrets: spec.Secrets, HTTP: spec.HTTP, Callback: spec.Callback, Queued: now, done: make(chan struct{})}
	if inv.ID == "" {
		inv.ID = newID(now)
	} else if prev, ok, err := o.shared.q.Get(inv.ID); err == nil && ok && doneYet(prev) {
		return prev, nil
	}
	o.await(inv)
	if err := o.shared.q.Publish(context.Background(), inv); err != nil {
		o.unawait(inv, nil)
		return nil, err
	}
	return inv, nil
}

// checkID refuses a caller-chosen invocation id that cannot be used.
func (o *Orchestrator) checkID(id string) error {
	if id == "" {
		return nil
	}
	if o.shared == nil {
		return newError(ErrBadID, "an invocation id can be chosen only with a shared queue (mforch serve --queue); leave it out")
	}
	if !validID.MatchString(id) {
		return newError(ErrBadID, "%q: use 1 to 64 letters, digits, '-' or '_'", id)
	}
	return nil
}

// QueueCodec turns invocations into a shared queue's messages and results
// and back. A queued invocation's secrets, HTTP headers (a caller's
// credentials) and Callback are sealed, as in a BoltStore, under a key
// every orchestrator of the installation holds; a result carries none.
type QueueCodec struct {
	sealer *BoltStore // only its seal and open are used
}

// OpenQueueCodec reads the queue's key from keyFile, or makes one there
// (mode 0600): copy that file to every orchestrator sharing the queue.
func OpenQueueCodec(keyFile string) (*QueueCodec, error) {
	aead, err := storeKey(keyFile)
	if err != nil {
		return nil, err
	}
	return newQueueCodec(aead), nil
}

func newQueueCodec(aead cipher.AEAD) *QueueCodec {
	return &QueueCodec{sealer: &BoltStore{aead: aead}}
}

// queued is a queue message: the record and, sealed, the invocation's
// Callback (a callback URL can carry a token; the record itself has no
// field for it, since a bbolt store never keeps one).
type queued struct {
	record
	SealedCallback []byte `json:"sealed_callback,omitempty"`
}

// callbackAD binds a sealed callback to its invocation id and field.
const callbackAD = "\x00callback"

// Encode is inv as a queue message, its secrets, headers and callback
// sealed.
func (c *QueueCodec) Encode(inv *Invocation) ([]byte, error) {
	msg := queued{record: toRecord(inv)}
	if err := c.sealer.seal(&msg.record); err != nil {
		return nil, err
	}
	if len(inv.Callback) > 0 {
		var err error
		if msg.SealedCallback, err = c.sealer.sealBytes(bytes.Clone(inv.Callback), inv.ID+callbackAD); err != nil {
			return nil, err
		}
	}
	return json.Marshal(msg)
}

// EncodeResult is a finished inv as stored for every orchestrator: without
// its secrets and headers.
func (c *QueueCodec) EncodeResult(inv *Invocation) ([]byte, error) {
	rec := toRecord(inv)
	rec.Secrets = nil
	if rec.HTTP != nil {
		rec.HTTP = withoutHeader(rec.HTTP)
	}
	return json.Marshal(rec)
}

// Seal seals b under the queue's key, bound to ad (a key's name): other
// shared values (orchestrator/natsq.State).
func (c *QueueCodec) Seal(b []byte, ad string) ([]byte, error) {
	return c.sealer.sealBytes(bytes.Clone(b), "state\x00"+ad)
}

// Open opens what Seal sealed with ad.
func (c *QueueCodec) Open(sealed []byte, ad string) ([]byte, error) {
	return c.sealer.openBytes(sealed, "state\x00"+ad)
}

// Decode reads what Encode or EncodeResult wrote. A finished invocation's
// Done is closed. ErrSecretsSealed: the secrets were sealed under another
// key (give every orchestrator the same key file).
func (c *QueueCodec) Decode(b []byte) (*Invocation, error) {
	rec, err := c.sealer.open(b)
	if err != nil {
		return nil, fmt.Errorf("queued invocation: %w", err)
	}
	if rec.ID == "" {
		return nil, errors.New("queued invocation: no id")
	}
	inv := rec.invocation()
	var msg struct {
		SealedCallback []byte `json:"sealed_callback"`
	}
	if err := json.Unmarshal(b, &msg); err != nil {
		return nil, fmt.Errorf("queued invocation: %w", err)
	}
	if len(msg.SealedCallback) > 0 {
		if inv.Callback, err = c.sealer.openBytes(msg.SealedCallback, rec.ID+callbackAD); err != nil {
			return nil, fmt.Errorf("queued invocation's callback: %w", err)
		}
	}
	return inv, nil
}
