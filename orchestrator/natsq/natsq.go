// Package natsq is a shared queue of invocations (orchestrator.SharedQueue)
// on NATS JetStream, so several mforch instances, each with its own workers,
// serve one installation (docs/scale-out.md):
//
//   - Invocations are messages of a work-queue stream (file storage,
//     replicas as configured), one subject per invocation under its
//     function's (SUBJECT.fn.FUNCTION.ID), published with the invocation
//     id as Nats-Msg-Id: a retried submit within the stream's duplicate
//     window is not queued twice. Publish returns after JetStream's PubAck.
//   - Every instance pulls from one durable pull consumer per function
//     (pull.go), only as many messages as it has workers that can run that
//     function and are free of them (QueueHost.Runners), and marks each in
//     progress while it holds it. An instance that dies stops doing so: the
//     ack wait runs out and another instance gets the message, its attempts
//     counting the deliveries.
//   - Results go to a key-value bucket, key the invocation id, with
//     create-only writes: the first result of an id is the one every
//     caller gets, however often the invocation ran. The message is
//     acknowledged after its result is stored. Every instance watches the
//     bucket for the results its callers wait for.
//   - An invocation's callback (orchestrator.JobSpec.Callback: an OpenFaaS
//     async call's X-Callback-Url) travels in its message, sealed. Once
//     the result is stored and before the message is acknowledged, the
//     instance holding it claims the callback with a create-only key in
//     the callbacks bucket; only the instance whose claim created the key
//     sends it. An instance that dies before claiming leaves the message
//     unacknowledged: the next delivery finds the result stored and
//     claims. One that dies after claiming, before its post is done,
//     leaves no callback: at most once (docs/scale-out.md).
package natsq

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/microfaas/microfaas/orchestrator"
)

// Options configure a Queue. Zero values take the defaults noted.
type Options struct {
	// URLs are the NATS servers, comma-separated (nats://HOST:PORT,...).
	URLs string
	// CredsFile is a NATS credentials file (user JWT and seed), if the
	// servers require one.
	CredsFile string
	// TLSCA, TLSCert and TLSKey: the CA that signed the servers'
	// certificates, and this client's certificate and key (mutual TLS).
	TLSCA, TLSCert, TLSKey string
	// Name names this instance: its NATS connection and its entry in
	// mforch status (default: the host name).
	Name string
	// Stream is the work-queue stream ("MICROFAAS"), Subject the prefix of
	// its subjects ("microfaas"), Consumer the name of the durable pull
	// consumers every instance shares ("mforch": CONSUMER_fn_FUNCTION per
	// function; CONSUMER itself drains what an older mforch queued),
	// Bucket the results bucket ("microfaas_results"), FunctionsBucket
	// the functions ever submitted ("microfaas_functions").
	Stream, Subject, Consumer, Bucket, FunctionsBucket string
	// Replicas of the stream and the bucket (1; 3 on a three-node cluster).
	Replicas int
	// AckWait is how long a message stays with an instance that stopped
	// marking it in progress before another gets it (30 s).
	AckWait time.Duration
	// MaxQueued bounds the messages in the stream (100,000): a submit
	// beyond it is refused (orchestrator.ErrQueueFull, HTTP 429).
	MaxQueued int64
	// DedupeWindow is how long a submitted id is remembered by the stream
	// (2 min); after it, a finished id is still found in the results.
	DedupeWindow time.Duration
	// ResultTTL is how long results are kept (30 days).
	ResultTTL time.Duration
	// PublishTimeout bounds a submit's wait for the PubAck (5 s).
	PublishTimeout time.Duration
	// StatusEvery is how often this instance publishes its status to the
	// instances bucket ("microfaas_instances"), for mforch status on any
	// instance (5 s); an instance silent for 6 times that drops out.
	StatusEvery     time.Duration
	InstancesBucket string
	// CallbacksBucket holds one claim per invocation whose callback an
	// instance sent ("microfaas_callbacks"), kept as long as results.
	CallbacksBucket string
	// KeyFile holds the key queued invocations' secrets, headers and
	// callbacks are sealed with (orchestrator.OpenQueueCodec): the same file on every
	// instance. Required.
	KeyFile string
	Log     *slog.Logger
}

func (o *Options) defaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.Stream, "MICROFAAS")
	def(&o.Subject, "microfaas")
	def(&o.Consumer, "mforch")
	def(&o.Bucket, "microfaas_results")
	def(&o.InstancesBucket, "microfaas_instances")
	def(&o.CallbacksBucket, "microfaas_callbacks")
	def(&o.FunctionsBucket, "microfaas_functions")
	if o.Name == "" {
		o.Name, _ = os.Hostname()
	}
	o.Name = badKey.ReplaceAllString(o.Name, "_")
	if o.StatusEvery <= 0 {
		o.StatusEvery = 5 * time.Second
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = 100_000
	}
	if o.DedupeWindow <= 0 {
		o.DedupeWindow = 2 * time.Minute
	}
	if o.ResultTTL <= 0 {
		o.ResultTTL = 30 * 24 * time.Hour
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// ErrConfig is a queue configuration that cannot work.
var ErrConfig = errors.New("shared queue configuration")

// Queue is a shared queue on JetStream. Open it, hand it to an
// orchestrator (Config.Queue), and Close it after the orchestrator's
// Shutdown.
type Queue struct {
	opts   Options
	log    *slog.Logger
	codec  *orchestrator.QueueCodec
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	cons   jetstream.Consumer
	kv     jetstream.KeyValue
	status jetstream.KeyValue // instances' statuses
	claims jetstream.KeyValue // callbacks claimed, by invocation id
	fnKV   jetstream.KeyValue // functions submitted, by subject token

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{} // a message was acknowledged: room to pull
	// rewatch: reconnected, watch results again.
	rewatch chan struct{}

	mu sync.Mutex
	// held are the messages delivered to this instance and not yet
	// acknowledged, by invocation id.
	held map[string]heldMsg
	// starts are the running entries being written, by invocation id.
	starts map[string]*starting
	// pullers fetch, by function (legacy: the pre-function subjects);
	// announced are the functions this instance listed in fnKV.
	pullers   map[string]*puller
	announced map[string]bool
	host      orchestrator.QueueHost
	stats     Stats
	// sendCallback sends a callback this instance claimed (OnCallback).
	sendCallback func(callback []byte, res *orchestrator.Invocation)
}

// heldMsg is a message this instance holds and its invocation's callback.
type heldMsg struct {
	msg      jetstream.Msg
	callback []byte
	function string
	// seq is the message's stream sequence, delivery its delivery count
	// (both from its metadata); started is set once a worker here
	// started it during this delivery (Started).
	seq, delivery uint64
	started       bool
}

// Stats count what a Queue did.
type Stats struct {
	Delivered   int // messages handed to this instance's orchestrator
	Started     int // deliveries started on a worker here (Started)
	Results     int // results this instance stored first
	Duplicates  int // results this instance found stored already (another run was first)
	Skipped     int // redeliveries whose result was stored already: acknowledged without running
	Poison      int // messages that did not decode: terminated
	GivenBack   int // deliveries given back (no worker here runs them)
	StoreFailed int // result writes that failed and were retried
	Callbacks   int // callbacks this instance claimed and handed to its sender
	// CallbacksClaimed: callbacks another instance had claimed already.
	CallbacksClaimed int
}

// Open connects to the NATS servers and makes sure the stream, the
// consumer and the bucket exist with opts' settings (instances starting
// together agree on them).
func Open(ctx context.Context, opts Options) (*Queue, error) {
	opts.defaults()
	if opts.URLs == "" {
		return nil, fmt.Errorf("%w: no NATS server (--queue nats://HOST:PORT)", ErrConfig)
	}
	if opts.KeyFile == "" {
		return nil, fmt.Errorf("%w: no key file for queued secrets (--queue-key)", ErrConfig)
	}
	if err := checkAuth(opts); err != nil {
		return nil, err
	}
	codec, err := orchestrator.OpenQueueCodec(opts.KeyFile)
	if err != nil {
		return nil, err
	}
	q := &Queue{opts: opts, log: opts.Log, codec: codec, held: map[string]heldMsg{}, starts: map[string]*starting{}, pullers: map[string]*puller{}, announced: map[string]bool{}, wake: make(chan struct{}, 1), rewatch: make(chan struct{}, 1)}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	nopts := []nats.Option{nats.Name(opts.Name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.Timeout(opts.PublishTimeout),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			q.log.Warn("shared queue: disconnected from NATS; submits are refused until it is back", "err", err)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			q.log.Debug("shared queue: NATS error", "subject", subj, "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			q.log.Info("shared queue: reconnected to NATS", "server", nc.ConnectedUrlRedacted())
			q.poke(q.rewatch)
		})}
	if opts.CredsFile != "" {
		nopts = append(nopts, nats.UserCredentials(opts.CredsFile))
	}
	if opts.TLSCA != "" {
		nopts = append(nopts, nats.RootCAs(opts.TLSCA))
	}
	if opts.TLSCert != "" || opts.TLSKey != "" {
		if opts.TLSCert == "" || opts.TLSKey == "" {
			return nil, fmt.Errorf("%w: a client certificate needs both --queue-tls-cert and --queue-tls-key", ErrConfig)
		}
		nopts = append(nopts, nats.ClientCert(opts.TLSCert, opts.TLSKey))
	}
	if opts.TLSCA != "" || opts.TLSCert != "" {
		nopts = append(nopts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	if q.nc, err = nats.Connect(opts.URLs, nopts...); err != nil {
		return nil, fmt.Errorf("%w: connecting to NATS at %s: %v (is nats-server running with JetStream, -js?)", orchestrator.ErrQueueDown, opts.URLs, err)
	}
	if err := q.setup(ctx); err != nil {
		q.nc.Close()
		return nil, err
	}
	return q, nil
}

// checkAuth refuses a NATS server off this host that mforch gives no
// credentials: whoever reaches it (a function on a board on the same LAN)
// could read every result from the bucket and queue calls. Sealing keeps
// secrets and headers out of its reach, not results.
func checkAuth(opts Options) error {
	if opts.CredsFile != "" || opts.TLSCert != "" {
		return nil
	}
	for _, raw := range strings.Split(opts.URLs, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Host == "" {
			return fmt.Errorf("%w: NATS server %q: want nats://HOST:PORT", ErrConfig, raw)
		}
		if u.User != nil {
			continue
		}
		host := u.Hostname()
		if ip, err := netip.ParseAddr(host); (err == nil && ip.IsLoopback()) || host == "localhost" {
			continue
		}
		return fmt.Errorf("%w: NATS server %s is off this host and mforch gives it no credentials, so whoever reaches it "+
			"could read every result and queue calls: give --queue-creds FILE, --queue-tls-cert and --queue-tls-key, "+
			"or nats://USER:PASSWORD@HOST:PORT, and keep the NATS port off the workers' network", ErrConfig, u.Host)
	}
	return nil
}

func (q *Queue) setup(ctx context.Context) error {
	o := q.opts
	var err error
	if q.js, err = jetstream.New(q.nc); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	q.stream, err = q.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: o.Stream, Subjects: []string{o.Subject + ".fn.>", o.Subject + ".inv.>"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Replicas: o.Replicas, MaxMsgs: o.MaxQueued, Discard: jetstream.DiscardNew,
		Duplicates: o.DedupeWindow, Description: "MicroFaaS invocations (mforch --queue)"})
	if err != nil {
		return fmt.Errorf("shared queue: stream %s: %w (does the NATS server run JetStream, -js?)", o.Stream, err)
	}
	// The consumer an older mforch made takes every subject; it is
	// narrowed to the old ones, which it goes on draining (its
	// acknowledgement state kept), so the per-function consumers do not
	// overlap it (a work-queue stream refuses that).
	q.cons, err = q.stream.CreateOrUpdateConsumer(ctx, q.consumerConfig(o.Consumer, o.Subject+".inv.>"))
	if err != nil {
		return fmt.Errorf("shared queue: consumer %s: %w", o.Consumer, err)
	}
	q.kv, err = q.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: o.Bucket, History: 1, TTL: o.ResultTTL, Storage: jetstream.FileStorage, Replicas: o.Replicas,
		Description: "MicroFaaS invocation results (mforch --queue)"})
	if err != nil {
		return fmt.Errorf("shared queue: results bucket %s: %w", o.Bucket, err)
	}
	q.status, err = q.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: o.InstancesBucket, History: 1, TTL: 6 * o.StatusEvery, Storage: jetstream.FileStorage, Replicas: o.Replicas,
		Description: "MicroFaaS instances' status (mforch --queue)"})
	if err != nil {
		return fmt.Errorf("shared queue: instances bucket %s: %w", o.InstancesBucket, err)
	}
	q.claims, err = q.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: o.CallbacksBucket, History: 1, TTL: o.ResultTTL, Storage: jetstream.FileStorage, Replicas: o.Replicas,
		Description: "MicroFaaS callbacks claimed (mforch --queue)"})
	if err != nil {
		return fmt.Errorf("shared queue: callbacks bucket %s: %w", o.CallbacksBucket, err)
	}
	q.fnKV, err = q.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: o.FunctionsBucket, History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas,
		Description: "MicroFaaS functions submitted, one consumer each (mforch --queue)"})
	if err != nil {
		return fmt.Errorf("shared queue: functions bucket %s: %w", o.FunctionsBucket, err)
	}
	return nil
}

// badKey matches what a key-value key may not hold; validKey is a key.
var (
	badKey   = regexp.MustCompile(`[^-_=.a-zA-Z0-9]`)
	validKey = regexp.MustCompile(`^[-_=.a-zA-Z0-9]+$`)
)

// publishStatus puts this instance's status in the instances bucket now
// and every StatusEvery.
func (q *Queue) publishStatus() {
	defer q.wg.Done()
	t := time.NewTicker(q.opts.StatusEvery)
	defer t.Stop()
	for {
		b, err := json.Marshal(orchestrator.InstanceStatus{Name: q.opts.Name, At: time.Now(), Status: q.host.Status()})
		if err == nil && q.nc.Status() == nats.CONNECTED {
			ctx, cancel := context.WithTimeout(q.ctx, q.opts.PublishTimeout)
			_, err = q.status.Put(ctx, q.opts.Name, b)
			cancel()
		}
		if err != nil && q.ctx.Err() == nil {
			q.log.Debug("shared queue: publishing this instance's status failed", "err", err)
		}
		select {
		case <-q.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Installation is every instance's last status, by name, and the
// stream's depth (orchestrator.SharedQueue).
func (q *Queue) Installation(ctx context.Context) ([]orchestrator.InstanceStatus, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, q.opts.PublishTimeout)
	defer cancel()
	depth, err := q.Depth(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("shared queue: %w", err)
	}
	lister, err := q.status.ListKeys(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("shared queue: instances: %w", err)
	}
	var out []orchestrator.InstanceStatus
	for k := range lister.Keys() {
		e, err := q.status.Get(ctx, k)
		if err != nil {
			continue // gone since it was listed
		}
		var st orchestrator.InstanceStatus
		if json.Unmarshal(e.Value(), &st) == nil {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, depth, nil
}

// Publish queues inv once (orchestrator.SharedQueue).
func (q *Queue) Publish(ctx context.Context, inv *orchestrator.Invocation) error {
	if st := q.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("%w: NATS connection %s", orchestrator.ErrQueueDown, strings.ToLower(st.String()))
	}
	data, err := q.codec.Encode(inv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, q.opts.PublishTimeout)
	defer cancel()
	if err := q.announce(ctx, inv.Function); err != nil {
		return fmt.Errorf("%w: listing function %s: %v", orchestrator.ErrQueueDown, inv.Function, err)
	}
	_, err = q.js.Publish(ctx, q.fnSubject(inv.Function, inv.ID), data, jetstream.WithMsgID(inv.ID))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum messages") {
			return &orchestrator.Error{Kind: orchestrator.ErrQueueFull, Msg: fmt.Sprintf("the shared queue holds its %d invocations at most", q.opts.MaxQueued)}
		}
		return fmt.Errorf("%w: %v", orchestrator.ErrQueueDown, err)
	}
	return nil
}

// Start pulls for host and watches results (orchestrator.SharedQueue).
func (q *Queue) Start(host orchestrator.QueueHost) error {
	q.mu.Lock()
	q.host = host
	q.mu.Unlock()
	w, err := q.kv.WatchAll(q.ctx, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("watching results: %w", err)
	}
	fw, err := q.fnKV.WatchAll(q.ctx, jetstream.IgnoreDeletes())
	if err != nil {
		w.Stop()
		return fmt.Errorf("watching functions: %w", err)
	}
	q.wg.Add(5)
	go q.watch(w)
	go q.watchFunctions(fw)
	go q.pull()
	go q.extend()
	go q.publishStatus()
	return nil
}

// watch hands the results callers here wait for to the host. After a
// reconnection the watch starts again (the server may have lost its
// consumer), and the host looks up the results stored in between.
func (q *Queue) watch(w jetstream.KeyWatcher) {
	defer q.wg.Done()
	for {
		select {
		case <-q.ctx.Done():
			return
		case <-q.rewatch:
			w.Stop()
			for {
				var err error
				if w, err = q.kv.WatchAll(q.ctx, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes()); err == nil {
					// Results stored before the watch began: looked up.
					q.host.Recheck()
					break
				}
				q.log.Debug("shared queue: watching results again failed; retrying", "err", err)
				if !sleep(q.ctx, idleWait) {
					return
				}
			}
		case e, ok := <-w.Updates():
			if !ok {
				if !sleep(q.ctx, idleWait) {
					return
				}
				q.poke(q.rewatch)
				continue
			}
			if e == nil || !q.host.Awaits(e.Key()) {
				continue
			}
			if _, running := isRunning(e.Value()); running {
				continue // started: its result comes later
			}
			inv, err := q.codec.Decode(e.Value())
			if err != nil {
				q.log.Error("shared queue: a result does not decode", "invocation", e.Key(), "err", err)
				continue
			}
			q.host.Result(inv)
		}
	}
}

// poke signals ch without blocking.
func (q *Queue) poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// take hands one message's invocation to the host.
func (q *Queue) take(msg jetstream.Msg) {
	id := msg.Subject()[strings.LastIndexByte(msg.Subject(), '.')+1:]
	meta, err := msg.Metadata()
	if err != nil {
		q.log.Error("shared queue: message without metadata; terminated", "subject", msg.Subject(), "err", err)
		msg.Term()
		return
	}
	inv, err := q.codec.Decode(msg.Data())
	if err != nil || inv.ID != id {
		q.log.Error("shared queue: queued invocation does not decode; terminated (it never runs): check that every instance has the same --queue-key",
			"invocation", id, "err", err)
		q.mu.Lock()
		q.stats.Poison++
		q.mu.Unlock()
		// Its callers get an answer rather than wait for ever.
		failed := &orchestrator.Invocation{ID: id, Finished: time.Now(), Err: &orchestrator.Error{Kind: orchestrator.ErrUnavailable,
			Msg: fmt.Sprintf("instance %s cannot read the queued invocation (%v): give every instance the same --queue-key", q.opts.Name, err)}}
		if data, eerr := q.codec.EncodeResult(failed); eerr == nil && validKey.MatchString(id) {
			ctx, cancel := context.WithTimeout(q.ctx, q.opts.PublishTimeout)
			q.writeOver(ctx, id, data, 0)
			cancel()
		}
		msg.TermWithReason("does not decode")
		return
	}
	if meta.NumDelivered > 1 {
		// Its result may be stored while the acknowledgement was lost
		// (the instance that stored it died before acknowledging, maybe
		// before claiming its callback: claimed here if nobody did).
		if _, ok, err := q.finalResult(q.ctx, id); err == nil && ok {
			if err := q.claimCallback(id, inv.Callback, nil); err != nil {
				q.log.Warn("shared queue: result stored, callback not claimed; the invocation comes back for it", "invocation", id, "err", err)
				msg.NakWithDelay(q.opts.AckWait / 3)
				return
			}
			msg.Ack()
			q.mu.Lock()
			q.stats.Skipped++
			q.mu.Unlock()
			return
		}
	}
	h := heldMsg{msg: msg, callback: inv.Callback, function: inv.Function, seq: meta.Sequence.Stream, delivery: meta.NumDelivered}
	q.mu.Lock()
	if old, ok := q.held[id]; ok {
		// Redelivered to this instance while it still holds it (the queue
		// was unreachable past the ack wait): the new delivery is the one
		// to acknowledge; it is not run twice here.
		h.started = old.started
		q.held[id] = h
		q.mu.Unlock()
		return
	}
	q.held[id] = h
	q.stats.Delivered++
	q.mu.Unlock()
	// Starts before this delivery: the deliveries before it, less those
	// handed back unstarted (unstarted.go).
	inv.Attempts = int(meta.NumDelivered) - 1
	if inv.Attempts > 0 {
		inv.Attempts -= q.unstartedBefore(id, meta.Sequence.Stream, meta.NumDelivered)
	}
	inv.Restarts = inv.Attempts
	inv.Worker, inv.Started = "", time.Time{}
	q.host.Deliver(inv)
}

// extend marks every message held here in progress, three times per ack
// wait, so no other instance gets it while this one runs it.
func (q *Queue) extend() {
	defer q.wg.Done()
	t := time.NewTicker(q.opts.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-q.ctx.Done():
			return
		case <-t.C:
		}
		q.mu.Lock()
		msgs := make([]jetstream.Msg, 0, len(q.held))
		for _, h := range q.held {
			msgs = append(msgs, h.msg)
		}
		q.mu.Unlock()
		for _, m := range msgs {
			m.InProgress()
		}
	}
}

// storeConcurrency bounds the result writes one Commit has under way.
const storeConcurrency = 64

// Commit stores the results of the finished writes, then acknowledges
// their messages (orchestrator.Store). A result that cannot be stored now
// (NATS unreachable) is retried in the background; its message stays held
// (in progress) until it is stored.
func (q *Queue) Commit(writes []orchestrator.StoreWrite) error {
	sem := make(chan struct{}, storeConcurrency)
	var wg sync.WaitGroup
	for _, w := range writes {
		if !w.Finished {
			continue
		}
		data, err := q.codec.EncodeResult(w.Invocation)
		if err != nil {
			return err
		}
		id := w.Invocation.ID
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			st := &storing{id: id, data: data}
			if !q.storeResult(st) {
				q.wg.Add(1)
				go q.retryResult(st)
			}
		}()
	}
	wg.Wait()
	return nil
}

// storing is one result on its way: stored is set once the result is in
// the bucket (so a retry only claims the callback and acknowledges), mine
// when it is this run's (not another run's, stored first).
type storing struct {
	id           string
	data         []byte
	stored, mine bool
}

// storeResult writes a result (create only: the first of an id stays),
// claims its invocation's callback, and acknowledges its message; false if
// a write failed (retry).
func (q *Queue) storeResult(st *storing) bool {
	id := st.id
	if q.nc.Status() != nats.CONNECTED {
		return false // not worth a timeout's wait
	}
	if !st.stored {
		// Over this run's running entry, once it is written.
		q.mu.Lock()
		start := q.starts[id]
		q.mu.Unlock()
		var rev uint64
		if start != nil {
			select {
			case <-start.done:
				rev = start.rev
			case <-q.ctx.Done():
				return false
			}
		}
		ctx, cancel := context.WithTimeout(q.ctx, q.opts.PublishTimeout)
		_, _, err := q.writeOver(ctx, id, st.data, rev)
		cancel()
		dup := errors.Is(err, errFinal)
		if err != nil && !dup {
			q.log.Warn("shared queue: storing a result failed; retrying", "invocation", id, "err", err)
			q.mu.Lock()
			q.stats.StoreFailed++
			q.mu.Unlock()
			return false
		}
		st.stored, st.mine = true, !dup
		q.mu.Lock()
		if dup {
			q.stats.Duplicates++
		} else {
			q.stats.Results++
		}
		q.mu.Unlock()
		if dup {
			q.log.Info("shared queue: invocation ran again (another instance stored its result first; that one stands)", "invocation", id)
		}
	}
	q.mu.Lock()
	h := q.held[id]
	q.mu.Unlock()
	// Claimed before the acknowledgement: an instance that dies in
	// between leaves the message to be delivered again, and claimed then.
	var stored []byte
	if st.mine {
		stored = st.data
	}
	err := q.claimCallback(id, h.callback, stored)
	if err != nil && !errors.Is(err, errNoSender) {
		q.log.Warn("shared queue: claiming a callback failed; retrying", "invocation", id, "err", err)
		return false
	}
	q.mu.Lock()
	delete(q.held, id)
	delete(q.starts, id)
	q.mu.Unlock()
	switch {
	case h.msg == nil:
	case err != nil:
		q.log.Warn("shared queue: result stored; its callback is left to the next delivery", "invocation", id, "err", err)
		h.msg.NakWithDelay(q.opts.AckWait / 3)
	default:
		h.msg.Ack()
	}
	q.poke(q.wake)
	return true
}

// ErrCallback is a callback this instance could not claim or hand over.
var ErrCallback = errors.New("shared queue: callback")

// errNoSender: this instance has no callback sender (no OpenFaaS provider,
// or not yet).
var errNoSender = fmt.Errorf("%w: this instance sends no callbacks (it runs no OpenFaaS provider, or not yet)", ErrCallback)

// claimCallback sends callback (if any) for invocation id, whose result
// is stored (stored: its value, or nil to read it), unless another
// instance claimed it first: the claim, a create-only key in the callbacks
// bucket, is written before the sender gets it, so at most one instance
// ever sends it. An error (NATS away) means nothing was claimed: try again.
func (q *Queue) claimCallback(id string, callback, stored []byte) error {
	if len(callback) == 0 {
		return nil
	}
	q.mu.Lock()
	send := q.sendCallback
	q.mu.Unlock()
	if send == nil {
		// Not claimed: an instance with a sender (or this one, once its
		// provider has started) claims it when the message comes back.
		return errNoSender
	}
	ctx, cancel := context.WithTimeout(q.ctx, q.opts.PublishTimeout)
	defer cancel()
	if stored == nil {
		v, ok, err := q.finalResult(ctx, id)
		if err == nil && !ok {
			err = errors.New("none stored")
		}
		if err != nil {
			return fmt.Errorf("%w: reading the result of %s: %w", ErrCallback, id, err)
		}
		stored = v
	}
	res, err := q.codec.Decode(stored)
	if err != nil {
		return fmt.Errorf("%w: the result of %s: %w", ErrCallback, id, err)
	}
	claim, _ := json.Marshal(struct {
		Instance string    `json:"instance"`
		At       time.Time `json:"at"`
	}{q.opts.Name, time.Now().UTC()})
	if _, err := q.claims.Create(ctx, id, claim); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			q.mu.Lock()
			q.stats.CallbacksClaimed++
			q.mu.Unlock()
			return nil
		}
		return fmt.Errorf("%w: claiming %s: %w", ErrCallback, id, err)
	}
	q.mu.Lock()
	q.stats.Callbacks++
	q.mu.Unlock()
	send(callback, res)
	return nil
}

// OnCallback sets what sends a callback this instance claimed: called
// once per invocation with a callback across the installation, with the
// stored result; it must not block (post in the background). Until it is
// set, this instance claims none (their messages go back to the queue).
func (q *Queue) OnCallback(send func(callback []byte, res *orchestrator.Invocation)) {
	q.mu.Lock()
	q.sendCallback = send
	q.mu.Unlock()
}

// retryResult stores a result once NATS is back, unless the queue closes.
func (q *Queue) retryResult(st *storing) {
	defer q.wg.Done()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		if !sleep(q.ctx, wait) {
			return
		}
		if q.storeResult(st) {
			return
		}
	}
}

// Pending is empty: a stopped instance's messages go to the others.
func (q *Queue) Pending() ([]*orchestrator.Invocation, error) { return nil, nil }

// Get finds an invocation by id: its result, else the queued message
// (orchestrator.Store).
func (q *Queue) Get(id string) (*orchestrator.Invocation, bool, error) {
	if strings.Contains(id, ".") {
		return nil, false, nil // no invocation's (ID.unstarted is a count)
	}
	ctx, cancel := context.WithTimeout(q.ctx, q.opts.PublishTimeout)
	defer cancel()
	e, err := q.kv.Get(ctx, id)
	if err == nil {
		inv, err := q.codec.Decode(e.Value())
		if err != nil {
			return nil, false, err
		}
		// A running entry: started on that instance, not finished.
		inv.Instance, _ = isRunning(e.Value())
		return inv, true, nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, err
	}
	if !plainToken.MatchString(id) {
		return nil, false, nil // no invocation has it (and no subject wildcard)
	}
	// Its function is not known here: any function's subject, then the
	// subject an older mforch wrote.
	m, err := q.stream.GetLastMsgForSubject(ctx, q.opts.Subject+".fn.*."+id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		m, err = q.stream.GetLastMsgForSubject(ctx, q.legacySubject(id))
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	inv, err := q.codec.Decode(m.Data)
	if err != nil {
		return nil, false, err
	}
	inv.Secrets, inv.Env, inv.Callback = nil, nil, nil
	return inv, true, nil
}

// Options are the queue's options, defaults filled in.
func (q *Queue) Options() Options { return q.opts }

// Stats returns what the queue did so far.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.stats
}

// Depth is how many invocations the stream holds (queued or running).
func (q *Queue) Depth(ctx context.Context) (uint64, error) {
	info, err := q.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// Close stops pulling and gives back the messages this instance holds
// and did not finish (the others get them at once). Call it after the
// orchestrator's Shutdown.
func (q *Queue) Close() error {
	q.cancel()
	q.wg.Wait()
	q.mu.Lock()
	held := q.held
	q.held = map[string]heldMsg{}
	q.mu.Unlock()
	var err error
	if len(held) > 0 {
		// Those not started here are counted unstarted first, so the
		// give-back costs them no attempt (unstarted.go).
		q.recordUnstartedAll(held)
		for _, h := range held {
			h.msg.Nak()
		}
		if q.nc.Status() == nats.CONNECTED {
			err = q.nc.FlushTimeout(q.opts.PublishTimeout)
		} else {
			err = errors.New("not connected")
		}
	}
	if err != nil {
		q.log.Warn("shared queue: giving back unfinished invocations failed; they go to other instances after the ack wait", "count", len(held), "err", err)
	}
	q.nc.Close()
	return nil
}

// Kill drops the connection at once, as a crash would: nothing is given
// back or acknowledged (tests).
func (q *Queue) Kill() {
	q.nc.Close()
	q.cancel()
	q.wg.Wait()
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
