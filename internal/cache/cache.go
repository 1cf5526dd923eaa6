// Package cache stores build outputs under a key that hashes all of their
// inputs, outside the repository. An entry is a directory that appears
// atomically (built in a temporary directory, then renamed), so an
// interrupted build never leaves a half entry behind.
package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

// DefaultDir is $XDG_CACHE_HOME/microfaas, else ~/.cache/microfaas.
func DefaultDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "microfaas")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "microfaas")
	}
	return filepath.Join(os.TempDir(), "microfaas-cache")
}

// Cache is a directory of entries, grouped by kind ("kernel", "initramfs").
type Cache struct{ Dir string }

// Path is where the entry for kind and key lives (whether or not it exists).
func (c Cache) Path(kind, key string) string { return filepath.Join(c.Dir, kind, key) }

// Has reports whether a complete entry exists.
func (c Cache) Has(kind, key string) bool {
	_, err := os.Stat(filepath.Join(c.Path(kind, key), ".complete"))
	return err == nil
}

// Fill builds an entry with fn writing into a fresh temporary directory,
// then publishes it. If fn fails, nothing is published.
func (c Cache) Fill(kind, key string, fn func(dir string) error) (string, error) {
	final := c.Path(kind, key)
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(final), ".tmp-"+key[:min(12, len(key))]+"-")
	if err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := fn(tmp); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	os.RemoveAll(final) // a stale incomplete entry
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("cache: publish %s: %w", final, err)
	}
	return final, nil
}

// Hasher builds a cache key from named inputs. Names are sorted, so the key
// does not depend on the order inputs were added in.
type Hasher struct{ parts map[string]string }

// NewHasher returns an empty key builder.
func NewHasher() *Hasher { return &Hasher{parts: map[string]string{}} }

// Add records an input by name and value (a hash, a version string, ...).
func (h *Hasher) Add(name, value string) { h.parts[name] = value }

// Inputs returns the recorded inputs, for manifests.
func (h *Hasher) Inputs() map[string]string {
	m := make(map[string]string, len(h.parts))
	for k, v := range h.parts {
		m[k] = v
	}
	return m
}

// Key returns the hex SHA-256 over all inputs.
func (h *Hasher) Key() string {
	names := make([]string, 0, len(h.parts))
	for n := range h.parts {
		names = append(names, n)
	}
	sort.Strings(names)
	s := sha256.New()
	for _, n := range names {
		fmt.Fprintf(s, "%d:%s=%d:%s\n", len(n), n, len(h.parts[n]), h.parts[n])
	}
	return hex.EncodeToString(s.Sum(nil))
}

// FileSHA256 returns the hex SHA-256 of a file's contents.
func FileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	s := sha256.New()
	n, err := io.Copy(s, f)
	if err != nil {
		return "", 0, fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(s.Sum(nil)), n, nil
}

// BytesSHA256 returns the hex SHA-256 of b.
func BytesSHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// CopyFile copies src to dst (mode 0644 unless perm says otherwise).
func CopyFile(dst, src string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// Lock takes an exclusive lock for the entry kind/key, waiting for another
// process that holds it: one process builds a given key while the others
// wait and then find the entry. Call the returned function to release it.
func (c Cache) Lock(kind, key string) (func(), error) {
	p := c.Path(kind, key) + ".lock"
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("cache: lock %s: %w", p, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// WriteManifest writes v as the entry's manifest.json (indented JSON).
func WriteManifest(dir string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "manifest.json"), append(b, '\n'), 0o644)
}

// ReadManifest decodes the entry's manifest.json into v.
func ReadManifest(dir string, v any) error {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
