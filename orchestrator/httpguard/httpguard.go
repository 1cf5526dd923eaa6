// Package httpguard puts one set of protections in front of all of mforch's
// HTTP routes, native and OpenFaaS alike: one authentication (HTTP basic,
// the OpenFaaS gateway's credentials), a bound on request bodies (413) and
// on the time to send them (408), and server timeouts on headers and idle
// connections. Handlers behind it see a body already read and bounded.
package httpguard

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"
)

// Config says what to guard.
type Config struct {
	// User and Password, if set, are required on every route except Open.
	User, Password string
	// Open are path prefixes served without credentials (e.g. "/healthz").
	Open []string
	// MaxBody bounds a request body (default 8 MiB): more is 413.
	MaxBody int64
	// BodyTimeout bounds the time to receive a body (default 30 s): a slower
	// client gets 408 and its connection closed.
	BodyTimeout time.Duration
	Log         *slog.Logger
}

// Defaults.
const (
	DefaultMaxBody     = 8 << 20
	DefaultBodyTimeout = 30 * time.Second
	// HeaderTimeout bounds the time to receive request headers.
	HeaderTimeout = 10 * time.Second
	// IdleTimeout closes keep-alive connections left idle.
	IdleTimeout = 2 * time.Minute
	// MaxHeaderBytes bounds request headers.
	MaxHeaderBytes = 64 << 10
)

// Wrap returns h behind the guard.
func Wrap(h http.Handler, cfg Config) http.Handler {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cfg.User != "" && !open(cfg.Open, r.URL.Path) && !authorized(r, cfg.User, cfg.Password) {
			w.Header().Set("WWW-Authenticate", `Basic realm="mforch"`)
			http.Error(w, "credentials required (HTTP basic auth, the --auth folder's basic-auth-user and basic-auth-password)", http.StatusUnauthorized)
			return
		}
		if r.ContentLength > cfg.MaxBody {
			tooLarge(w, cfg.MaxBody)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			body, err := readBody(w, r, cfg)
			if err != nil {
				var mbe *http.MaxBytesError
				switch {
				case errors.As(err, &mbe):
					tooLarge(w, cfg.MaxBody)
				case errors.Is(err, os.ErrDeadlineExceeded):
					cfg.Log.Warn("HTTP request body too slow", "remote", r.RemoteAddr, "path", r.URL.Path, "timeout", cfg.BodyTimeout)
					w.Header().Set("Connection", "close")
					http.Error(w, fmt.Sprintf("request body not received within %s", cfg.BodyTimeout), http.StatusRequestTimeout)
				default:
					http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
				}
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		h.ServeHTTP(w, r)
	})
}

// readBody reads the whole body under the body deadline and size bound.
func readBody(w http.ResponseWriter, r *http.Request, cfg Config) ([]byte, error) {
	rc := http.NewResponseController(w)
	// Not every ResponseWriter supports deadlines (httptest's recorder):
	// then only the size bound applies.
	if rc.SetReadDeadline(time.Now().Add(cfg.BodyTimeout)) == nil {
		defer rc.SetReadDeadline(time.Time{})
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, cfg.MaxBody))
}

func tooLarge(w http.ResponseWriter, max int64) {
	w.Header().Set("Connection", "close")
	http.Error(w, fmt.Sprintf("request body larger than %d bytes", max), http.StatusRequestEntityTooLarge)
}

func open(prefixes []string, path string) bool {
	for _, p := range prefixes {
		if path == p || strings.HasPrefix(path, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}

func authorized(r *http.Request, user, password string) bool {
	u, p, ok := r.BasicAuth()
	// Both compared in constant time, and both always compared.
	uok := subtle.ConstantTimeCompare([]byte(u), []byte(user))
	pok := subtle.ConstantTimeCompare([]byte(p), []byte(password))
	return ok && uok&pok == 1
}

// Server returns an http.Server for h on addr with the guard's header,
// idle and header-size limits. Bodies are bounded by Wrap.
func Server(addr string, h http.Handler) *http.Server {
	return &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: HeaderTimeout,
		IdleTimeout: IdleTimeout, MaxHeaderBytes: MaxHeaderBytes}
}
