package openfaas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/openfaas/faas-provider/types"

	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/deploy"
)

// SharedState keeps the provider's deployments and secrets where every
// mforch instance of an installation sees them (with mforch serve --queue:
// a key-value bucket on NATS JetStream, orchestrator/natsq). One key per
// function ("fn.NAME") and per secret ("secret.NAME"), so instances that
// change different ones do not undo each other.
type SharedState interface {
	Put(ctx context.Context, key string, value []byte) error
	Delete(ctx context.Context, key string) error
	// Watch calls fn with every key's value now, then with every change
	// (value nil: deleted), from one goroutine, until stop is called.
	Watch(fn func(key string, value []byte)) (stop func(), err error)
}

// RevisionedState is a SharedState whose keys have revisions (a key-value
// bucket's), for optimistic concurrency: an update of a function names the
// revision it was based on, so two instances editing one function cannot
// silently undo each other (PUT /system/functions with If-Match).
type RevisionedState interface {
	SharedState
	// Get is key's value and revision (nil and 0: no such key).
	Get(ctx context.Context, key string) (value []byte, rev uint64, err error)
	// Update writes value only if key's revision is still rev (0: only if
	// there is no key), and returns the new revision; ErrConflict if not.
	Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error)
}

// ErrConflict is an update based on a revision that is no longer the
// current one: another instance changed the function meanwhile.
var ErrConflict = errors.New("changed since it was read")

// maxCAS bounds the compare-and-set rounds of a PUT without If-Match.
const maxCAS = 5

// casFunctionLocked writes function d (created then) to the shared state
// over revision ifMatch, or, if ifMatch is 0, over whatever revision is
// current (read and written in one compare-and-set, retried maxCAS times).
// A shared state without revisions: nothing to do here (shareLocked writes
// it). p.mu held.
func (p *Provider) casFunctionLocked(d types.FunctionDeployment, created time.Time, ifMatch uint64) error {
	rs, ok := p.cfg.Shared.(RevisionedState)
	if !ok {
		return nil
	}
	key := "fn." + d.Service
	v, err := json.Marshal(sharedFunction{d, created})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	if ifMatch > 0 {
		if _, err := rs.Update(ctx, key, v, ifMatch); err != nil {
			return err
		}
		p.shared[key] = v
		return nil
	}
	for range maxCAS {
		_, rev, err := rs.Get(ctx, key)
		if err != nil {
			return err
		}
		_, err = rs.Update(ctx, key, v, rev)
		if err == nil {
			p.shared[key] = v
			return nil
		}
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%w: function %s changed %d times while this update was written; retry", ErrConflict, d.Service, maxCAS)
}

// etagTries bounds the 10 ms waits of GET /system/function/NAME for this
// instance to take over the function's latest revision.
const etagTries = 50

// revision is function name's shared value and revision, 0 if it has
// none (or the state has no revisions).
func (p *Provider) revision(ctx context.Context, name string) ([]byte, uint64) {
	rs, ok := p.cfg.Shared.(RevisionedState)
	if !ok {
		return nil, 0
	}
	ctx, cancel := context.WithTimeout(ctx, sharedTimeout)
	defer cancel()
	v, rev, err := rs.Get(ctx, "fn."+name)
	if err != nil {
		return nil, 0
	}
	return v, rev
}

// ifMatch reads an If-Match header: a revision this provider gave as an
// ETag ("N"), 0 if there is none.
func ifMatch(h string) (uint64, error) {
	if h == "" {
		return 0, nil
	}
	rev, err := strconv.ParseUint(strings.Trim(strings.TrimPrefix(strings.TrimSpace(h), "W/"), `"`), 10, 64)
	if err != nil || rev == 0 {
		return 0, fmt.Errorf("If-Match %q: want the ETag GET /system/function/NAME answered (a revision, \"N\")", h)
	}
	return rev, nil
}

// CallbackRelay carries async calls' callbacks with the queued invocations
// (orchestrator.JobSpec.Callback), so that the instance that finishes one,
// not the one it came to, sends its callback, once (natsq.State). A
// SharedState that is also a CallbackRelay is used as one.
type CallbackRelay interface {
	// OnCallback sets what sends a callback this instance claimed, with the
	// stored result (nil: none; the queue leaves them to other instances).
	OnCallback(send func(callback []byte, res *orchestrator.Invocation))
}

// sharedTimeout bounds one write to the shared state.
const sharedTimeout = 5 * time.Second

// sharedFunction is a function as shared: its deployment, not this
// instance's counters.
type sharedFunction struct {
	Deployment types.FunctionDeployment `json:"deployment"`
	Created    time.Time                `json:"created"`
}

// sharedValues is the provider's state as shared keys and values (p.mu held).
func (p *Provider) sharedValues() map[string][]byte {
	out := map[string][]byte{}
	for name, fn := range p.fns {
		if b, err := json.Marshal(sharedFunction{fn.Deployment, fn.Created}); err == nil {
			out["fn."+name] = b
		}
	}
	for name, s := range p.secrets {
		if b, err := json.Marshal(s); err == nil {
			out["secret."+name] = b
		}
	}
	return out
}

// shareLocked writes what changed since the state was last shared (p.mu
// held).
func (p *Provider) shareLocked() error {
	if p.cfg.Shared == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	now := p.sharedValues()
	var errs []error
	for k, v := range now {
		if bytes.Equal(p.shared[k], v) {
			continue
		}
		if err := p.cfg.Shared.Put(ctx, k, v); err != nil {
			errs = append(errs, err)
			continue
		}
		p.shared[k] = v
	}
	for k := range p.shared {
		if _, ok := now[k]; ok {
			continue
		}
		if err := p.cfg.Shared.Delete(ctx, k); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(p.shared, k)
	}
	if err := errors.Join(errs...); err != nil {
		return errors.New("sharing the deployments with the other mforch instances failed (is NATS reachable?): " + err.Error())
	}
	return nil
}

// applyShared takes over a change another instance shared. A function
// whose image is pulled is pulled here too (in the background: its calls
// are unknown here until then).
func (p *Provider) applyShared(key string, value []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if bytes.Equal(p.shared[key], value) {
		return // this instance's own write, or nothing new
	}
	if value == nil {
		delete(p.shared, key)
	} else {
		p.shared[key] = value
	}
	kind, name, _ := strings.Cut(key, ".")
	switch kind {
	case "secret":
		if value == nil {
			delete(p.secrets, name)
			break
		}
		var s types.Secret
		if err := json.Unmarshal(value, &s); err != nil || s.Name != name {
			p.log.Error("a shared secret does not decode; ignored", "secret", name, "err", err)
			break
		}
		p.secrets[name] = s
	case "fn":
		if value == nil {
			fn, ok := p.fns[name]
			delete(p.fns, name)
			delete(p.wanted, name)
			if ok && fn.target.Deployed && p.cfg.Deploys != nil {
				go func() {
					if err := p.cfg.Deploys.Delete(name); err != nil && !errors.Is(err, deploy.ErrNotDeployed) {
						p.log.Error("removing a function another instance removed", "function", name, "err", err)
					}
				}()
			}
			p.log.Info("function removed by another instance", "function", name)
			break
		}
		var sf sharedFunction
		if err := json.Unmarshal(value, &sf); err != nil || sf.Deployment.Service != name {
			p.log.Error("a shared function does not decode; ignored", "function", name, "err", err)
			break
		}
		d := sf.Deployment
		t, pull, err := p.checkDeploymentLocked(&d)
		if err != nil {
			p.log.Error("a function another instance deployed cannot run here", "function", name, "err", err)
			break
		}
		if !pull {
			p.setShared(sf, t)
			break
		}
		if p.cfg.Deploys == nil {
			p.log.Error("a function another instance deployed needs run-time deploys, which this instance does not have", "function", name)
			break
		}
		if rec, ok := p.cfg.Deploys.Get(name); ok && rec.Image == d.Image {
			t.Deployed, t.Watchdog, t.User = true, rec.Watchdog, !rec.Watchdog
			p.setShared(sf, t)
			break
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			if err := p.pull(ctx, d, &t); err != nil {
				p.log.Error("pulling a function another instance deployed failed; its calls fail here", "function", name, "image", d.Image, "err", err)
				return
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if bytes.Equal(p.shared[key], value) { // not changed meanwhile
				p.setShared(sf, t)
			}
		}()
	}
}

// setShared records a function another instance deployed (p.mu held).
func (p *Provider) setShared(sf sharedFunction, t target) {
	d := sf.Deployment
	d.Namespace = Namespace
	fn, ok := p.fns[d.Service]
	if !ok {
		fn = &function{Created: sf.Created}
		p.fns[d.Service] = fn
	}
	fn.Deployment, fn.target = d, t
	p.log.Info("function deployed by another instance", "function", d.Service, "image", d.Image)
}

// startShared takes over the shared state and follows its changes.
func (p *Provider) startShared() error {
	p.shared = map[string][]byte{}
	stop, err := p.cfg.Shared.Watch(p.applyShared)
	if err != nil {
		return err
	}
	p.stopShared = stop
	return nil
}
