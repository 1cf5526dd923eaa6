// Package httpguard puts one set of protections in front of all of mforch's
// HTTP routes, native and OpenFaaS alike: a Host check (DNS rebinding), an
// Origin and Sec-Fetch-Site check (requests a browser sends for another
// site), one authentication (HTTP basic, the OpenFaaS gateway's
// credentials, generated when none are given: credentials.go), a JSON
// content type on state-changing requests, a bound on request bodies (413)
// and on the time to send them (408), and server timeouts on headers and
// idle connections. Handlers behind it see a body already read and bounded.
package httpguard

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"
)

// Why a request was refused before any handler saw it.
var (
	// ErrHost: the Host header names neither a loopback name, an IP
	// address nor a host the operator allowed: a page reaching the API
	// through a DNS name rebound to its address (403).
	ErrHost = errors.New("Host not served here")
	// ErrCrossOrigin: a browser sent the request for another origin
	// (Origin or Sec-Fetch-Site says so): cross-site request forgery (403).
	ErrCrossOrigin = errors.New("cross-origin request refused")
	// ErrNotJSON: a state-changing request to a JSON route declared another
	// content type (415). A browser form or a no-CORS fetch can send
	// text/plain or form types to any address without asking first.
	ErrNotJSON = errors.New("content type is not application/json")
)

// Config says what to guard.
type Config struct {
	// User and Password, if set, are required on every route except Open.
	User, Password string
	// Open are path prefixes served without credentials (e.g. "/healthz").
	Open []string
	// AllowHosts are host names (no port) requests may name in their Host
	// header besides loopback names (localhost, *.localhost) and IP
	// addresses. Any other name is refused: a DNS name an attacker rebinds
	// to the API's address is how a web page reaches a loopback API.
	AllowHosts []string
	// AllowOrigins are origins ("http://gateway:8080") whose pages may call
	// the API from a browser besides the API's own (e.g. the OpenFaaS
	// gateway's UI, whose requests the gateway forwards with their Origin).
	AllowOrigins []string
	// RawBody are path prefixes whose bodies are not JSON (function input,
	// any type). Every other POST, PUT, PATCH or DELETE that declares a
	// content type must declare application/json.
	RawBody []string
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
		if err := CheckBrowser(r, cfg); err != nil {
			cfg.Log.Warn("HTTP request refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "err", err)
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		if cfg.User != "" && !open(cfg.Open, r.URL.Path) && !authorized(r, cfg.User, cfg.Password) {
			w.Header().Set("WWW-Authenticate", `Basic realm="mforch"`)
			http.Error(w, "credentials required: HTTP basic auth with basic-auth-user and basic-auth-password from mforch's credentials folder (its path is in mforch serve's log)", http.StatusUnauthorized)
			return
		}
		if !prefixed(cfg.RawBody, r.URL.Path) {
			if err := CheckJSON(r); err != nil {
				http.Error(w, err.Error(), http.StatusUnsupportedMediaType)
				return
			}
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

func open(prefixes []string, path string) bool { return prefixed(prefixes, path) }

// prefixed reports whether path is one of prefixes or below one.
func prefixed(prefixes []string, path string) bool {
	for _, p := range prefixes {
		if path == p || strings.HasPrefix(path, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}

// CheckBrowser refuses what a browser would send on an attacker page's
// behalf: a Host that is a DNS name not allowed (ErrHost), and a request
// for another origin (ErrCrossOrigin), told by Origin (on every non-GET
// request and on CORS GETs) or by Sec-Fetch-Site (which browsers send to
// loopback and HTTPS addresses on every request, image loads and
// navigations included). Programs (faas-cli, the gateway, curl) send
// neither header and pass.
func CheckBrowser(r *http.Request, cfg Config) error {
	if !hostAllowed(r.Host, cfg.AllowHosts) {
		return fmt.Errorf("%w: %q (DNS rebinding guard): call the API at an IP address or localhost, or allow the name (mforch serve --http-allow-host)", ErrHost, r.Host)
	}
	origin := r.Header.Get("Origin")
	if origin != "" && !sameOrigin(origin, r) && !originListed(origin, cfg.AllowOrigins) {
		return fmt.Errorf("%w: Origin %q is not this API's (%s); allow a trusted page's origin with mforch serve --http-allow-origin", ErrCrossOrigin, origin, r.Host)
	}
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		// A listed origin's page is cross-site by definition.
		if origin == "" || !originListed(origin, cfg.AllowOrigins) {
			return fmt.Errorf("%w: the browser says this request comes from another site (Sec-Fetch-Site: %s); open the API's own URL instead", ErrCrossOrigin, site)
		}
	}
	return nil
}

// hostAllowed: no Host (HTTP/1.0), any IP address (a name is needed to
// rebind, and an address as Host means the page's origin is that very
// address), localhost and *.localhost (browsers resolve them to loopback
// themselves), or a listed name.
func hostAllowed(host string, allow []string) bool {
	h := hostname(host)
	if h == "" {
		return true
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	for _, a := range allow {
		if strings.EqualFold(strings.TrimSuffix(a, "."), h) {
			return true
		}
	}
	return false
}

// hostname is host without its port and IPv6 brackets.
func hostname(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
}

// sameOrigin reports whether origin is r's own scheme, host and port.
func sameOrigin(origin string, r *http.Request) bool {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	o, err := url.Parse(origin)
	if err != nil || o.Scheme != scheme || o.Host == "" {
		return false
	}
	return strings.EqualFold(withPort(o.Host, scheme), withPort(r.Host, scheme))
}

func originListed(origin string, allow []string) bool {
	o, err := url.Parse(origin)
	if err != nil || o.Host == "" {
		return false
	}
	for _, a := range allow {
		if u, err := url.Parse(a); err == nil && strings.EqualFold(u.Scheme, o.Scheme) &&
			strings.EqualFold(withPort(u.Host, u.Scheme), withPort(o.Host, o.Scheme)) {
			return true
		}
	}
	return false
}

// withPort adds the scheme's default port to a host that has none.
func withPort(host, scheme string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	port := "80"
	if scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), port)
}

// CheckJSON refuses a state-changing request that declares a content
// type other than application/json (ErrNotJSON). A request that declares
// none passes: Go clients such as the OpenFaaS gateway's scaler send JSON
// without one, and a browser cannot send a body without a type unless it
// also sends Origin, which CheckBrowser judges.
func CheckJSON(r *http.Request) error {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return nil
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" {
		return nil
	}
	return fmt.Errorf("%w: %s %s sent %q: send the body as JSON with Content-Type: application/json", ErrNotJSON, r.Method, r.URL.Path, ct)
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
