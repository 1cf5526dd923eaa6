package openfaas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/openfaas/faas-provider/types"

	"github.com/microfaas/microfaas/orchestrator/deploy"
)

// Native is what mforch's native deploy routes (deploy.Handler: PUT,
// DELETE, GET /functions[/NAME], mforch deploy) go through. With shared
// state that has revisions (mforch serve --queue) it is the provider's
// shared path: a native deploy is written to the bucket as the function's
// OpenFaaS deployment with the same compare-and-set rules as POST and PUT
// /system/functions, so every instance pulls and lists it, and a native
// removal removes it everywhere. Otherwise it is the deploy.Store itself
// (each instance its own, as before). Nil without run-time deploys.
//
// The mapping: a native record is a name, an image and what this
// instance built from it (a bundle per architecture of its own workers).
// Shared, it is an OpenFaaS deployment {service: NAME, image: IMAGE}; a
// native PUT over a function deployed through OpenFaaS changes only its
// image (environment, secrets, labels, limits stay). Each instance pulls
// the image itself, for its own workers' architectures, so the per-arch
// bundles are never shared. Only images pulled at run time go through
// the native routes: a built-in (microfaas/NAME, microfaas/fn:NAME) is
// refused (deploy it with POST /system/functions) and not removed by them.
func (p *Provider) Native() deploy.Deployer {
	if p.cfg.Deploys == nil {
		return nil
	}
	if _, ok := p.cfg.Shared.(RevisionedState); !ok {
		return p.cfg.Deploys
	}
	return native{p}
}

type native struct{ p *Provider }

func (n native) Get(name string) (deploy.Record, bool) { return n.p.cfg.Deploys.Get(name) }
func (n native) List() []deploy.Record                 { return n.p.cfg.Deploys.List() }

// Deploy creates or replaces name: read the shared deployment and its
// revision, pull image, then write at that revision (a create if there
// was none). A create racing another instance's create, or a change or
// removal landing while the image was pulled, loses with deploy.ErrConflict
// and this instance takes the bucket's value over again (resync), so a
// native deploy never brings back a function removed meanwhile.
func (n native) Deploy(ctx context.Context, name, image string, _ []string) (deploy.Record, error) {
	p := n.p
	rs := p.cfg.Shared.(RevisionedState)
	key := "fn." + name
	rctx, cancel := context.WithTimeout(ctx, sharedTimeout)
	v, rev, err := rs.Get(rctx, key)
	cancel()
	if err != nil {
		return deploy.Record{}, fmt.Errorf("%w: %w", deploy.ErrUnavailable, err)
	}
	d := types.FunctionDeployment{Service: name, Image: image}
	created := time.Now().UTC()
	if v != nil {
		var sf sharedFunction
		if err := json.Unmarshal(v, &sf); err != nil {
			return deploy.Record{}, fmt.Errorf("the shared deployment of %s does not decode (%w): remove it with mforch deploy --delete %s", name, err, name)
		}
		d, created = sf.Deployment, sf.Created
		d.Image = image
	}
	p.mu.Lock()
	t, pull, err := p.checkDeploymentLocked(&d)
	p.mu.Unlock()
	if err != nil {
		return deploy.Record{}, fmt.Errorf("%w: %w", deploy.ErrBadImage, err)
	}
	if !pull {
		return deploy.Record{}, fmt.Errorf("%w: %s names a function baked into the worker image, not an image to pull: deploy it with POST /system/functions (faas-cli deploy)", deploy.ErrBadImage, image)
	}
	if err := p.pull(ctx, d, &t); err != nil {
		return deploy.Record{}, err // the Store keeps what it had
	}
	d.Namespace = Namespace
	p.mu.Lock()
	if _, err := p.casFunctionLocked(d, created, rev == 0, rev); err != nil {
		p.mu.Unlock()
		p.resync(key)
		if errors.Is(err, ErrConflict) {
			return deploy.Record{}, fmt.Errorf("%w: function %s was deployed, changed or removed through another request while its image was pulled; nothing changed: run mforch deploy again (GET /functions shows what is deployed)", deploy.ErrConflict, name)
		}
		return deploy.Record{}, fmt.Errorf("%w: %w", deploy.ErrUnavailable, err)
	}
	fn, ok := p.fns[name]
	if !ok {
		fn = &function{}
		p.fns[name] = fn
	}
	fn.Deployment, fn.Created, fn.target = d, created, t
	err = p.saveLocked()
	p.mu.Unlock()
	if err != nil {
		return deploy.Record{}, err
	}
	rec, ok := p.cfg.Deploys.Get(name)
	if !ok {
		return deploy.Record{}, fmt.Errorf("%w: %s was removed as it was deployed: run mforch deploy again", deploy.ErrConflict, name)
	}
	p.log.Info("function deployed (native)", "function", name, "image", image, "watchdog", t.Watchdog)
	return rec, nil
}

// Delete removes name from the bucket (at the revision read; retried as
// a DELETE /system/functions without If-Match is), then here. A function
// another instance removed already is gone: no error.
func (n native) Delete(name string) error {
	p := n.p
	key := "fn." + name
	v, _ := p.revision(context.Background(), name)
	p.mu.Lock()
	p.syncLocked()
	fn, local := p.fns[name]
	pulled := local && fn.target.Deployed
	if v != nil {
		var sf sharedFunction
		if json.Unmarshal(v, &sf) == nil {
			_, pull, _ := p.resolveImage(name, sf.Deployment.Image)
			pulled = pull
		}
	}
	if !pulled {
		p.mu.Unlock()
		if local || v != nil {
			return fmt.Errorf("%w: %s runs a function baked into the worker image: remove it with DELETE /system/functions (faas-cli remove %s)", deploy.ErrNotDeployed, name, name)
		}
		return fmt.Errorf("%w: %s", deploy.ErrNotDeployed, name)
	}
	_, err := p.casLocked(key, nil, false, 0)
	if errors.Is(err, ErrRemoved) {
		delete(p.shared, key) // by another instance; this one had not caught up
		err = nil
	}
	if err != nil {
		p.mu.Unlock()
		if errors.Is(err, ErrConflict) {
			return fmt.Errorf("%w: %v: run mforch deploy --delete %s again", deploy.ErrConflict, err, name)
		}
		return fmt.Errorf("%w: %w", deploy.ErrUnavailable, err)
	}
	delete(p.fns, name)
	delete(p.wanted, name)
	err = p.saveLocked()
	p.mu.Unlock()
	if derr := p.cfg.Deploys.Delete(name); derr != nil && !errors.Is(derr, deploy.ErrNotDeployed) {
		err = errors.Join(err, derr)
	}
	p.logs.forget(name)
	if err == nil {
		p.log.Info("function removed (native)", "function", name)
	}
	return err
}
