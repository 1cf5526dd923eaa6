package natsq

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Pulling by capacity, per function. Each function has its own subject
// (SUBJECT.fn.TOKEN.ID) and its own durable pull consumer
// (CONSUMER_fn_TOKEN), shared by every instance; the functions bucket
// lists the functions ever submitted, so each instance knows which
// consumers there are. An instance fetches a function's messages only
// while one more of them still fits on a distinct worker that can run it
// (QueueHost.Runners) beside the invocations held here or asked for, each
// on a worker that can run it (a matching, match.go): an instance whose
// free workers cannot run a function leaves its messages to the instances
// that can.
//
// The legacy consumer (CONSUMER, subjects SUBJECT.inv.ID, written by
// mforch before per-function subjects) is drained by every instance as
// any worker's work, while it holds messages (docs/scale-out.md, upgrade).

const (
	// maxFetches bounds the pull requests under way at once,
	// maxPerFunction those of one function: a finished job makes room for
	// a new request at once, while older ones still wait for messages.
	maxFetches     = 64
	maxPerFunction = 4
	// fetchWait is how long a pull request waits for messages of a
	// function whose runners run no other function; sharedFetchWait of
	// one whose runners others share (its request holds their capacity
	// while it waits).
	fetchWait       = time.Second
	sharedFetchWait = 250 * time.Millisecond
	idleWait        = 250 * time.Millisecond
	// legacyEvery is how often the legacy consumer's backlog is checked.
	legacyEvery = 5 * time.Second
)

// legacy names the legacy consumer among the pullers (any worker runs it).
const legacy = ""

// plainToken is a function name usable as a subject token as it is.
var plainToken = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// token is function's subject token and consumer name suffix: the name,
// or "=" and its hex when it holds characters a subject cannot.
func token(function string) string {
	if plainToken.MatchString(function) {
		return function
	}
	return "=" + hex.EncodeToString([]byte(function))
}

// fnSubject is invocation id's subject, of function.
func (q *Queue) fnSubject(function, id string) string {
	return q.opts.Subject + ".fn." + token(function) + "." + id
}

// legacySubject is invocation id's subject as mforch wrote it before
// per-function subjects.
func (q *Queue) legacySubject(id string) string { return q.opts.Subject + ".inv." + id }

// puller is one consumer's fetching state (under q.mu).
type puller struct {
	cons     jetstream.Consumer // nil until first needed
	fetching int                // its fetches under way (maxPerFunction at most)
	asked    int                // messages they may still bring
	started  time.Time          // its last fetch's start: the oldest goes first
}

// announce lists function in the functions bucket, once per instance,
// before its first invocation is published: every instance then makes
// and pulls its consumer.
func (q *Queue) announce(ctx context.Context, function string) error {
	q.mu.Lock()
	done := q.announced[function]
	q.mu.Unlock()
	if done {
		return nil
	}
	_, err := q.fnKV.Create(ctx, token(function), []byte(function))
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return err
	}
	q.mu.Lock()
	q.announced[function] = true
	q.mu.Unlock()
	q.addFunction(function)
	return nil
}

// addFunction makes function's puller if it has none.
func (q *Queue) addFunction(function string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.pullers[function]; !ok {
		q.pullers[function] = &puller{}
		q.poke(q.wake)
	}
}

// watchFunctions adds a puller for every function any instance announced.
func (q *Queue) watchFunctions(w jetstream.KeyWatcher) {
	defer q.wg.Done()
	for {
		select {
		case <-q.ctx.Done():
			w.Stop()
			return
		case e, ok := <-w.Updates():
			if !ok {
				// The watch ended (reconnection): start it again.
				for {
					if !sleep(q.ctx, idleWait) {
						return
					}
					var err error
					if w, err = q.fnKV.WatchAll(q.ctx, jetstream.IgnoreDeletes()); err == nil {
						break
					}
				}
				continue
			}
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				q.addFunction(string(e.Value()))
			}
		}
	}
}

// consumer is function's durable consumer, made on first use.
func (q *Queue) consumer(ctx context.Context, function string) (jetstream.Consumer, error) {
	q.mu.Lock()
	p := q.pullers[function]
	c := p.cons
	q.mu.Unlock()
	if c != nil {
		return c, nil
	}
	var err error
	if function == legacy {
		c = q.cons
	} else {
		c, err = q.stream.CreateOrUpdateConsumer(ctx, q.consumerConfig(q.opts.Consumer+"_fn_"+token(function),
			q.opts.Subject+".fn."+token(function)+".>"))
		if err != nil {
			return nil, fmt.Errorf("consumer for %s: %w", function, err)
		}
	}
	q.mu.Lock()
	p.cons = c
	q.mu.Unlock()
	return c, nil
}

// consumerConfig is a durable pull consumer's configuration.
func (q *Queue) consumerConfig(name, filter string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: name, FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy, AckWait: q.opts.AckWait,
		// Attempts are bounded by the orchestrators (MaxAttempts), which
		// end a poison invocation with a result instead of leaving it.
		MaxDeliver: -1, MaxAckPending: -1, MaxWaiting: 4096}
}

// workerSet is a set of worker indexes.
type workerSet []uint64

func newWorkerSet(n int, members []int) workerSet {
	s := make(workerSet, (n+63)/64)
	for _, i := range members {
		s[i/64] |= 1 << (i % 64)
	}
	return s
}

func (s workerSet) overlaps(o workerSet) bool {
	for i := range min(len(s), len(o)) {
		if s[i]&o[i] != 0 {
			return true
		}
	}
	return false
}

func (s workerSet) count() int {
	n := 0
	for _, w := range s {
		n += bits.OnesCount64(w)
	}
	return n
}

// pull fetches messages, per function, as long as the host has workers
// for them.
func (q *Queue) pull() {
	defer q.wg.Done()
	ended := make(chan struct{}, maxFetches)
	fetches := 0
	var checked time.Time
	for {
		if time.Since(checked) >= legacyEvery {
			q.checkLegacy()
			checked = time.Now()
		}
		fetches += q.startFetches(fetches, ended)
		t := time.NewTimer(idleWait)
		select {
		case <-q.ctx.Done():
			t.Stop()
			for ; fetches > 0; fetches-- {
				<-ended
			}
			return
		case <-ended:
			fetches--
		case <-q.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// checkLegacy looks whether the legacy consumer holds messages (queued
// by an older mforch): its puller exists only while it does.
func (q *Queue) checkLegacy() {
	ctx, cancel := context.WithTimeout(q.ctx, q.opts.PublishTimeout)
	defer cancel()
	info, err := q.cons.Info(ctx)
	if err != nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	_, has := q.pullers[legacy]
	// Delivered and not acknowledged (held by an instance that may die)
	// counts: it comes back.
	backlog := info.NumPending + uint64(info.NumAckPending)
	switch {
	case backlog > 0 && !has:
		q.pullers[legacy] = &puller{}
	case backlog == 0 && has && q.pullers[legacy].fetching == 0:
		delete(q.pullers, legacy)
	}
}

// startFetches starts a fetch for every function that has room on its
// runners (match.go) and fewer than maxPerFunction fetches under way, the
// longest waiting first; it returns how many.
func (q *Queue) startFetches(fetches int, ended chan<- struct{}) int {
	q.mu.Lock()
	names := make([]string, 0, len(q.pullers)+1)
	for name := range q.pullers {
		names = append(names, name)
	}
	for _, h := range q.held { // a function held need not be pulled any more
		if _, ok := q.pullers[h.function]; !ok && !slices.Contains(names, h.function) {
			names = append(names, h.function)
		}
	}
	q.mu.Unlock()
	if len(names) == 0 {
		return 0
	}
	if !slices.Contains(names, legacy) {
		names = append(names, legacy) // "": every worker not failed
	}
	// Not under q.mu: Runners takes the orchestrator's lock.
	n, runners := q.host.Runners(names)
	sets := make(map[string]workerSet, len(names))
	for i, name := range names {
		sets[name] = newWorkerSet(n, runners[i])
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	// load: per function, the invocations held here or asked for.
	load := map[string]int{}
	total := 0
	for _, h := range q.held {
		load[h.function]++
		total++
	}
	for name, p := range q.pullers {
		load[name] += p.asked
		total += p.asked
	}
	free := sets[legacy].count() - total
	fit := newMatching(n, names, runners, load)
	order := make([]string, 0, len(q.pullers))
	for name, p := range q.pullers {
		if p.fetching < maxPerFunction {
			order = append(order, name)
		}
	}
	sort.Slice(order, func(i, j int) bool {
		a, b := q.pullers[order[i]], q.pullers[order[j]]
		if !a.started.Equal(b.started) {
			return a.started.Before(b.started)
		}
		return order[i] < order[j]
	})
	started := 0
	for _, name := range order {
		if free <= 0 || fetches+started >= maxFetches {
			break
		}
		mine := sets[name]
		shared := false
		for other, p := range q.pullers {
			if other != name && p != nil && mine.overlaps(sets[other]) && sets[other].count() > 0 {
				shared = true
			}
		}
		// As many as the matching of the load to workers leaves room
		// for (match.go); they join the load for the functions after.
		k := fit.more(name, free)
		if k <= 0 {
			continue
		}
		p := q.pullers[name]
		p.fetching++
		p.asked += k
		p.started = time.Now()
		free -= k
		started++
		wait := fetchWait
		if shared {
			wait = sharedFetchWait
		}
		go q.fetch(name, p, k, wait, ended)
	}
	return started
}

// fetch asks function's consumer for n messages and delivers those that
// come.
func (q *Queue) fetch(function string, p *puller, n int, wait time.Duration, ended chan<- struct{}) {
	got := 0
	defer func() {
		q.mu.Lock()
		p.fetching--
		p.asked -= n - got
		q.mu.Unlock()
		ended <- struct{}{}
	}()
	ctx, cancel := context.WithTimeout(q.ctx, q.opts.PublishTimeout)
	cons, err := q.consumer(ctx, function)
	cancel()
	if err != nil {
		if q.ctx.Err() == nil {
			q.log.Debug("shared queue: no consumer", "function", function, "err", err)
			sleep(q.ctx, idleWait)
		}
		return
	}
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(wait))
	if err != nil {
		if q.ctx.Err() == nil {
			q.log.Debug("shared queue: fetch failed", "function", function, "err", err)
			sleep(q.ctx, idleWait)
		}
		return
	}
	for msg := range batch.Messages() {
		got++
		q.mu.Lock()
		p.asked--
		q.mu.Unlock()
		q.take(msg)
	}
	if err := batch.Error(); err != nil && q.ctx.Err() == nil && !errors.Is(err, nats.ErrTimeout) {
		q.log.Debug("shared queue: fetch ended", "function", function, "err", err)
		sleep(q.ctx, idleWait)
	}
}

// Knows reports whether function was ever submitted to the queue, by any
// instance (orchestrator.SharedQueue).
func (q *Queue) Knows(function string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.pullers[function]
	return ok && function != legacy
}

// GiveBack returns a delivered invocation no worker here can run, or
// whose worker was lost mid-job, to the queue at once
// (orchestrator.SharedQueue). One that did not start here is counted
// unstarted before its nak, in the background (GiveBack must not block),
// so the give-back costs it no attempt (unstarted.go); one that started
// is not, so its redelivery counts the start.
func (q *Queue) GiveBack(id string) {
	q.mu.Lock()
	h, ok := q.held[id]
	delete(q.held, id)
	delete(q.starts, id)
	if ok && h.msg != nil {
		q.stats.GivenBack++
		q.wg.Add(1)
		go func() {
			defer q.wg.Done()
			if !h.started {
				q.recordUnstarted(id, h)
			}
			h.msg.Nak()
		}()
	}
	q.mu.Unlock()
	q.poke(q.wake)
}
