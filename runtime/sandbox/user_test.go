package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestResolveUser(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc", "group"), []byte("root:x:0:\napp:x:1001:\nstaff:x:50:\n"), 0o644)
	tests := []struct {
		user     string
		uid, gid uint32
		err      error
	}{
		{"", Nobody, Nobody, nil},
		{"app", 1000, 1001, nil},
		{"1000", 1000, 1001, nil},
		{"app:staff", 1000, 50, nil},
		{"2000", 2000, Nobody, nil},
		{"2000:60", 2000, 60, nil},
		{"root", Nobody, Nobody, nil},
		{"0:0", Nobody, Nobody, nil},
		{"ghost", 0, 0, ErrUnknownUser},
		{"app:ghosts", 0, 0, ErrUnknownUser},
	}
	for _, tt := range tests {
		uid, gid, err := ResolveUser(root, tt.user)
		if !errors.Is(err, tt.err) || (err == nil && (uid != tt.uid || gid != tt.gid)) {
			t.Errorf("ResolveUser(%q) = %d, %d, %v; want %d, %d, %v", tt.user, uid, gid, err, tt.uid, tt.gid, tt.err)
		}
	}
	if _, _, err := ResolveUser(t.TempDir(), "app"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("a named user in an image without /etc/passwd: %v", err)
	}
}

func TestVisible(t *testing.T) {
	for p, want := range map[string]bool{"/functions/f": true, "/usr/bin/x": true, "/tmp/f": false,
		"/run/mf/key": false, "/proc/1": false, "/var/x": false, "/": false, "/init": false} {
		if got := Visible(p); got != want {
			t.Errorf("Visible(%q) = %v", p, got)
		}
	}
}
