package deploy

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/microfaas/microfaas/bundle"
	"github.com/microfaas/microfaas/bundle/oci"
)

// classify wraps a registry error in the sentinel that says what to do
// about it; other errors are returned as they are.
func classify(err error) error {
	if errors.Is(err, oci.ErrPlainHTTP) {
		return err // it names --insecure-registry
	}
	if name.IsErrBadName(err) {
		return fmt.Errorf("%w: %w", ErrBadImage, err)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%w (%d): give mforch serve a docker config.json with credentials for it (--registry-config FILE): %w",
				ErrUnauthorized, te.StatusCode, err)
		case http.StatusNotFound:
			return fmt.Errorf("%w: check the repository and tag: %w", ErrImageNotFound, err)
		}
		return fmt.Errorf("%w: it answered %d: %w", ErrUnreachable, te.StatusCode, err)
	}
	var ne net.Error
	var ue *url.Error
	var oe *net.OpError
	if errors.As(err, &ne) || errors.As(err, &ue) || errors.As(err, &oe) {
		return fmt.Errorf("%w: %w: check the registry's host and port, and that mforch's host reaches it", ErrUnreachable, err)
	}
	return err
}

// HTTPStatus is the HTTP status for a Store error: 400 for an image that
// cannot run (no image for a platform the cluster has, a missing
// entrypoint, an ELF for the wrong machine, an unsafe file system), a
// registry that refuses access or has no such image, plain HTTP to a
// registry not listed as insecure, a bad name; 413 for
// an image over the size limits; 404 for an unknown deployment; 502 for a
// registry that cannot be reached; 409 for a change another mforch
// instance made meanwhile; 503 for shared state out of reach; 500
// otherwise.
func HTTPStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrNotDeployed):
		return http.StatusNotFound
	case errors.Is(err, bundle.ErrImageTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrUnreachable):
		return http.StatusBadGateway
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, oci.ErrNoPlatform), errors.Is(err, bundle.ErrCannotRun), errors.Is(err, bundle.ErrUnsafeImage), errors.Is(err, oci.ErrPlainHTTP),
		errors.Is(err, ErrUnauthorized), errors.Is(err, ErrImageNotFound), errors.Is(err, ErrBadImage), errors.Is(err, ErrBadName), errors.Is(err, ErrBadArch):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}
