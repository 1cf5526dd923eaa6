package httpguard

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestLoadOrCreateCredentials(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "microfaas", "auth")
	c, created, err := LoadOrCreateCredentials(dir)
	if err != nil || !created {
		t.Fatalf("first call: created %v, %v", created, err)
	}
	if c.User != DefaultUser || len(c.Password) != 40 || strings.Trim(c.Password, "0123456789abcdef") != "" {
		t.Errorf("generated user %q, password of %d characters", c.User, len(c.Password))
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("folder mode %v, want 0700", m)
	}
	for _, f := range []string{UserFile, PasswordFile} {
		if m := mode(t, filepath.Join(dir, f)); m != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, m)
		}
	}
	again, created, err := LoadOrCreateCredentials(dir)
	if err != nil || created || again != c {
		t.Errorf("second call: %+v created %v, %v; want the same credentials, not created", again.User, created, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("left in the folder: %v", entries)
	}
}

func TestLoadOrCreateCredentialsExisting(t *testing.T) {
	t.Run("operator's files are kept", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, UserFile), []byte("bob\n"), 0o600)
		os.WriteFile(filepath.Join(dir, PasswordFile), []byte("  s3cret \n"), 0o600)
		c, created, err := LoadOrCreateCredentials(dir)
		if err != nil || created || c != (Credentials{"bob", "s3cret"}) {
			t.Errorf("%+v created %v, %v", c.User, created, err)
		}
	})
	t.Run("an open folder is made owner-only", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "auth")
		os.Mkdir(dir, 0o755)
		os.Chmod(dir, 0o755)
		if _, _, err := LoadOrCreateCredentials(dir); err != nil {
			t.Fatal(err)
		}
		if m := mode(t, dir); m != 0o700 {
			t.Errorf("folder mode %v, want 0700", m)
		}
	})
	t.Run("an empty password is an error, not replaced", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, UserFile), []byte("admin"), 0o600)
		os.WriteFile(filepath.Join(dir, PasswordFile), []byte("\n"), 0o600)
		_, _, err := LoadOrCreateCredentials(dir)
		if !errors.Is(err, ErrNoCredentials) {
			t.Errorf("%v, want ErrNoCredentials", err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, PasswordFile)); string(b) != "\n" {
			t.Errorf("password file replaced: %q", b)
		}
	})
	t.Run("a user without password gets one", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, UserFile), []byte("carol"), 0o600)
		c, created, err := LoadOrCreateCredentials(dir)
		if err != nil || !created || c.User != "carol" || c.Password == "" {
			t.Errorf("%q created %v, %v", c.User, created, err)
		}
	})
}

// TestLoadOrCreateCredentialsRace: mforch processes starting together end
// with one password.
func TestLoadOrCreateCredentialsRace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	const n = 8
	var wg sync.WaitGroup
	got := make([]Credentials, n)
	made := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], made[i], errs[i] = LoadOrCreateCredentials(dir)
		}()
	}
	wg.Wait()
	created := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if got[i] != got[0] {
			t.Errorf("caller %d got other credentials", i)
		}
		if made[i] {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d callers say they created the credentials, want 1", created)
	}
}

func TestDefaultCredentialsDir(t *testing.T) {
	tests := []struct{ stateDir, xdg, home, want string }{
		{"/var/lib/microfaas", "/x", "/h", "/var/lib/microfaas/auth"},
		{"/var/lib/microfaas:/var/lib/other", "", "/h", "/var/lib/microfaas/auth"},
		{"", "/x", "/h", "/x/microfaas/auth"},
		{"", "relative", "/h", "/h/.local/state/microfaas/auth"}, // XDG says: ignore a relative path
		{"", "", "/h", "/h/.local/state/microfaas/auth"},
	}
	for _, tt := range tests {
		t.Setenv("STATE_DIRECTORY", tt.stateDir)
		t.Setenv("XDG_STATE_HOME", tt.xdg)
		t.Setenv("HOME", tt.home)
		if got, err := DefaultCredentialsDir(); err != nil || got != tt.want {
			t.Errorf("%+v: %q %v", tt, got, err)
		}
	}
}

func TestNewEndpoint(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, UserFile), []byte("admin"), 0o600)
	os.WriteFile(filepath.Join(dir, PasswordFile), []byte("from-file"), 0o600)
	tests := []struct {
		addr, dir, wantURL string
		want               *Credentials
	}{
		{"http://127.0.0.1:8080", dir, "http://127.0.0.1:8080", &Credentials{"admin", "from-file"}},
		{"http://bob:from-url@127.0.0.1:8080", dir, "http://127.0.0.1:8080", &Credentials{"bob", "from-url"}},
		{"http://127.0.0.1:8080", filepath.Join(dir, "missing"), "http://127.0.0.1:8080", nil},
	}
	for _, tt := range tests {
		e, err := NewEndpoint(tt.addr, tt.dir)
		if err != nil {
			t.Fatalf("%s: %v", tt.addr, err)
		}
		if e.String() != tt.wantURL || (e.Creds == nil) != (tt.want == nil) || e.Creds != nil && *e.Creds != *tt.want {
			t.Errorf("%s: %s %+v", tt.addr, e, e.Creds)
		}
		msg := e.Unauthorized().Error()
		if strings.Contains(msg, "from-") {
			t.Errorf("the 401 error shows a password: %v", msg)
		}
		// The client's flag and the server's flag, both of which exist.
		if !strings.Contains(msg, "--auth DIR") || !strings.Contains(msg, "--openfaas-auth") {
			t.Errorf("the 401 error should name mforch status's --auth and mforch serve's --openfaas-auth: %v", msg)
		}
	}
	for _, bad := range []string{"127.0.0.1:8080", "ftp://u:pw-in-url@h", "http://u:pw-in-url@h:bad port/"} {
		_, err := NewEndpoint(bad, dir)
		if err == nil || strings.Contains(err.Error(), "pw-in-url") {
			t.Errorf("%q: %v; want an error without the password", bad, err)
		}
	}
}
