package functions

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestImageCommand(t *testing.T) {
	root := t.TempDir()
	mk := func(p string, mode os.FileMode) {
		t.Helper()
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x"), mode); err != nil {
			t.Fatal(err)
		}
	}
	mk("usr/bin/fwatchdog", 0o755)
	mk("usr/local/bin/fwatchdog", 0o755) // earlier in PATH: wins
	mk("bin/plain", 0o644)               // not executable
	mk("opt/tool", 0o755)
	os.MkdirAll(filepath.Join(root, "bin/dir"), 0o755)
	os.Symlink("/opt/tool", filepath.Join(root, "bin/linked")) // absolute: inside the image
	// An absolute link to a file only the worker has: resolved in the
	// image it names nothing.
	host := filepath.Join(t.TempDir(), "host-tool")
	os.WriteFile(host, []byte("x"), 0o755)
	os.Symlink(host, filepath.Join(root, "bin/escape"))

	tests := []struct {
		cmd  string
		env  []string
		want string
		err  error
	}{
		{"fwatchdog", nil, "/usr/local/bin/fwatchdog", nil},
		{"fwatchdog", []string{"PATH=/usr/bin:/bin"}, "/usr/bin/fwatchdog", nil},
		{"./fwatchdog", nil, "./fwatchdog", nil}, // a path: left to the sandbox
		{"/no/such", nil, "/no/such", nil},       // likewise
		{"linked", []string{"PATH=/bin"}, "/bin/linked", nil},
		{"plain", []string{"PATH=/bin"}, "", ErrNotInPath},
		{"dir", []string{"PATH=/bin"}, "", ErrNotInPath},
		{"escape", []string{"PATH=/bin"}, "", ErrNotInPath},
		{"tool", []string{"PATH=opt:/bin"}, "", ErrNotInPath}, // relative PATH entries skipped
		{"missing", nil, "", ErrNotInPath},
	}
	for _, tt := range tests {
		got, err := imageCommand(root, tt.env, tt.cmd)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("imageCommand(%q, %q) = %q, %v; want %q, %v", tt.cmd, tt.env, got, err, tt.want, tt.err)
		}
	}
}
