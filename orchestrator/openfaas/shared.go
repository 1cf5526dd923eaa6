package openfaas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
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
// bucket's), for optimistic concurrency: a deploy creates a key only if
// there is none, and an update or removal names the revision it was based
// on, so two instances changing one function or secret cannot silently
// undo each other (If-Match on PUT and DELETE).
type RevisionedState interface {
	SharedState
	// Get is key's value and revision (nil and 0: no such key).
	Get(ctx context.Context, key string) (value []byte, rev uint64, err error)
	// Update writes value only if key's revision is still rev (0: only if
	// there is no key), and returns the new revision; ErrConflict if not.
	Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error)
	// Remove deletes key only if its revision is still rev; ErrConflict if
	// not.
	Remove(ctx context.Context, key string, rev uint64) error
}

// ErrConflict is a change based on a revision that is no longer the
// current one (or a create of a key that exists): another instance
// changed the function or secret meanwhile.
var ErrConflict = errors.New("changed since it was read")

// ErrRemoved is an update or removal, without If-Match, of a key another
// instance removed: it is not brought back.
var ErrRemoved = errors.New("removed meanwhile")

// maxCAS bounds the compare-and-set rounds of a PUT or DELETE without
// If-Match.
const maxCAS = 5

// casLocked changes shared key: creates it with value if create (only if
// there is no key), else writes value (nil: removes the key) over revision
// ifMatch or, if ifMatch is 0, over whatever revision is current (read and
// written in one compare-and-set, retried maxCAS times; ErrRemoved if the
// key this instance saw is gone). It returns the new revision (0 for a removal). A shared
// state without revisions: nothing to do here (shareLocked writes it).
// p.mu held.
func (p *Provider) casLocked(key string, value []byte, create bool, ifMatch uint64) (uint64, error) {
	rs, ok := p.cfg.Shared.(RevisionedState)
	if !ok {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	write := func(rev uint64) (uint64, error) {
		if value == nil {
			return 0, rs.Remove(ctx, key, rev)
		}
		return rs.Update(ctx, key, value, rev)
	}
	done := func(rev uint64) (uint64, error) {
		if value == nil {
			delete(p.shared, key)
		} else {
			p.shared[key] = value
		}
		return rev, nil
	}
	if create || ifMatch > 0 {
		rev, err := write(ifMatch)
		if err != nil {
			return 0, err
		}
		return done(rev)
	}
	for range maxCAS {
		_, rev, err := rs.Get(ctx, key)
		if err != nil {
			return 0, err
		}
		if rev == 0 {
			if _, seen := p.shared[key]; seen {
				return 0, fmt.Errorf("%w: %s", ErrRemoved, key)
			}
			// Only this instance had it (a native deploy, the state
			// file): a removal has nothing to remove, a change shares it.
			if value == nil {
				return done(0)
			}
		}
		rev, err = write(rev)
		if err == nil {
			return done(rev)
		}
		if !errors.Is(err, ErrConflict) {
			return 0, err
		}
	}
	return 0, fmt.Errorf("%w: %s changed %d times while this request was written; retry", ErrConflict, key, maxCAS)
}

// casFunctionLocked writes function d (created then) to the shared state
// (casLocked). p.mu held.
func (p *Provider) casFunctionLocked(d types.FunctionDeployment, created time.Time, create bool, ifMatch uint64) (uint64, error) {
	v, err := json.Marshal(sharedFunction{d, created})
	if err != nil {
		return 0, err
	}
	return p.casLocked("fn."+d.Service, v, create, ifMatch)
}

// etag is the ETag header of revision rev ("" for 0: none).
func etag(w http.ResponseWriter, rev uint64) {
	if rev > 0 {
		w.Header().Set("ETag", fmt.Sprintf(`"%d"`, rev))
	}
}

// resync takes over key's shared value again after this instance's change
// of it was refused: the pull (or removal) made for the change may have
// left the deploy.Store with an image the shared deployment does not have.
func (p *Provider) resync(key string) {
	rs, ok := p.cfg.Shared.(RevisionedState)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	v, _, err := rs.Get(ctx, key)
	if err != nil {
		p.log.Error("reading the shared state again after a refused change", "key", key, "err", err)
		return
	}
	if v != nil {
		p.mu.Lock()
		delete(p.shared, key) // so that applyShared takes it over again
		p.mu.Unlock()
		p.applyShared(key, v)
		return
	}
	kind, name, _ := strings.Cut(key, ".")
	if kind != "fn" {
		return
	}
	p.mu.Lock()
	delete(p.fns, name)
	delete(p.shared, key)
	p.mu.Unlock()
	if p.cfg.Deploys != nil {
		if err := p.cfg.Deploys.Delete(name); err != nil && !errors.Is(err, deploy.ErrNotDeployed) {
			p.log.Error("removing the image pulled for a function removed meanwhile", "function", name, "err", err)
		}
	}
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
		return 0, fmt.Errorf("If-Match %q: want an ETag this API answered (GET /system/function/NAME, or a secret's last POST or PUT): a revision, \"N\"", h)
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
