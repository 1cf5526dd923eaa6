package httpguard

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/microfaas/microfaas/internal/statedir"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Credentials are the API's HTTP basic-auth user and password, kept as
// OpenFaaS keeps them: files basic-auth-user and basic-auth-password in one
// folder (the gateway's secret_mount_path), so the gateway can read the
// same folder.
type Credentials struct{ User, Password string }

// The files of a credentials folder, and the user a generated one names.
const (
	UserFile     = "basic-auth-user"
	PasswordFile = "basic-auth-password"
	DefaultUser  = "admin"
)

// ErrNoCredentials: the folder holds no credentials (wraps fs.ErrNotExist
// when a file is missing).
var ErrNoCredentials = errors.New("no API credentials")

// DefaultCredentialsDir is where mforch keeps generated credentials: under
// systemd's StateDirectory ($STATE_DIRECTORY/auth), else
// $XDG_STATE_HOME/microfaas/auth, else ~/.local/state/microfaas/auth.
func DefaultCredentialsDir() (string, error) {
	d, err := statedir.Dir()
	if err != nil {
		return "", fmt.Errorf("no folder for the API credentials (pass one): %w", err)
	}
	return filepath.Join(d, "auth"), nil
}

// ReadCredentials reads dir's basic-auth-user and basic-auth-password
// (surrounding white space trimmed, as OpenFaaS does).
func ReadCredentials(dir string) (Credentials, error) {
	var c Credentials
	for _, f := range []struct {
		name string
		v    *string
	}{{UserFile, &c.User}, {PasswordFile, &c.Password}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return Credentials{}, fmt.Errorf("%w in %s: %w", ErrNoCredentials, dir, err)
		}
		if *f.v = strings.TrimSpace(string(b)); *f.v == "" {
			return Credentials{}, fmt.Errorf("%w: %s is empty: write a user or password in it, or remove the folder to have one generated", ErrNoCredentials, filepath.Join(dir, f.name))
		}
	}
	return c, nil
}

// LoadOrCreateCredentials reads dir's credentials, or, where there are
// none, creates them as OpenFaaS does: user admin and a random password,
// in files only their owner can read (0600) in a folder only its owner
// can enter (0700). created says whether they are new. Two mforch
// starting at once end up with the same credentials.
func LoadOrCreateCredentials(dir string) (c Credentials, created bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Credentials{}, false, fmt.Errorf("credentials folder: %w", err)
	}
	// MkdirAll keeps an existing folder's mode: this one holds a password.
	if fi, err := os.Stat(dir); err != nil {
		return Credentials{}, false, err
	} else if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return Credentials{}, false, fmt.Errorf("credentials folder %s is open to others and cannot be made owner-only: %w", dir, err)
		}
	}
	c, err = ReadCredentials(dir)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return c, false, err
	}
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return Credentials{}, false, err
	}
	// The user first: a password without its user would be half a pair.
	if err := createFile(filepath.Join(dir, UserFile), DefaultUser); err != nil && !errors.Is(err, fs.ErrExist) {
		return Credentials{}, false, err
	}
	err = createFile(filepath.Join(dir, PasswordFile), hex.EncodeToString(b))
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return Credentials{}, false, err
	}
	created = err == nil
	// Read back what is there: another mforch may have won the race.
	c, err = ReadCredentials(dir)
	return c, created && err == nil, err
}

// createFile writes a new owner-only file at path with content, whole or
// not at all: an existing file is left alone (fs.ErrExist).
func createFile(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*") // 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(content + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// A hard link fails if path exists, where a rename would replace it.
	return os.Link(tmp.Name(), path)
}
