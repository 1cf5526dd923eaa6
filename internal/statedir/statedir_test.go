package statedir

import "testing"

func TestDir(t *testing.T) {
	tests := []struct{ systemd, xdg, home, want string }{
		{"/var/lib/microfaas:/other", "/x", "/h", "/var/lib/microfaas"},
		{"", "/x", "/h", "/x/microfaas"},
		{"", "relative", "/h", "/h/.local/state/microfaas"},
		{"", "", "/h", "/h/.local/state/microfaas"},
	}
	for _, tt := range tests {
		t.Setenv("STATE_DIRECTORY", tt.systemd)
		t.Setenv("XDG_STATE_HOME", tt.xdg)
		t.Setenv("HOME", tt.home)
		got, err := Dir()
		if err != nil || got != tt.want {
			t.Errorf("%+v: Dir() = %q, %v; want %q", tt, got, err, tt.want)
		}
	}
}
