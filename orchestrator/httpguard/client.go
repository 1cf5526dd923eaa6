package httpguard

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
)

// Endpoint is a running mforch's API as a client (mforch status, loadgen)
// calls it: its base URL, never holding credentials, so it can be printed,
// and the credentials to send.
type Endpoint struct {
	URL   *url.URL
	Creds *Credentials // nil: none found, none sent
	// From says where Creds came from, for error messages.
	From string
}

// NewEndpoint parses addr. Credentials in its URL (http://user:pw@host)
// win; else those in dir (mforch serve's folder: DefaultCredentialsDir
// when dir is empty), if it has any.
func NewEndpoint(addr, dir string) (Endpoint, error) {
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// url.Parse's error would quote addr, password and all.
		return Endpoint{}, fmt.Errorf("API address %q: want http://HOST:PORT", redact(addr))
	}
	e := Endpoint{URL: u}
	if u.User != nil {
		pw, _ := u.User.Password()
		e.Creds, e.From = &Credentials{User: u.User.Username(), Password: pw}, "the address"
		e.URL = &url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
		return e, nil
	}
	if dir == "" {
		if dir, err = DefaultCredentialsDir(); err != nil {
			return e, nil // nothing to read: try without
		}
	}
	c, err := ReadCredentials(dir)
	switch {
	case err == nil:
		e.Creds, e.From = &c, dir
	case errors.Is(err, fs.ErrNotExist):
		e.From = dir // none there: the server will say if it wants some
	default:
		return Endpoint{}, err
	}
	return e, nil
}

// Authorize adds the credentials, if any, to req.
func (e Endpoint) Authorize(req *http.Request) {
	if e.Creds != nil {
		req.SetBasicAuth(e.Creds.User, e.Creds.Password)
	}
}

// String is the base URL, without credentials.
func (e Endpoint) String() string { return e.URL.String() }

// credentialsHint names both flags: the client's --auth takes the folder
// that the server was given with --openfaas-auth.
const credentialsHint = "pass --auth DIR with mforch serve's credentials folder (its --openfaas-auth, or the folder of the password_file it logs), or put them in --addr (http://admin:PASSWORD@host:port)"

// Unauthorized is the error for a 401 answer: what was sent and what to do.
func (e Endpoint) Unauthorized() error {
	if e.Creds == nil {
		return fmt.Errorf("%s: 401 Unauthorized: no credentials found in %s; %s", e, e.From, credentialsHint)
	}
	return fmt.Errorf("%s: 401 Unauthorized: the credentials from %s were refused; %s", e, e.From, credentialsHint)
}

// redact hides a password in a URL that may not parse.
func redact(addr string) string {
	if u, err := url.Parse(addr); err == nil {
		return u.Redacted()
	}
	return "(unparsable address)"
}
