package openfaas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
