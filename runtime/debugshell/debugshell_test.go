package debugshell

import "testing"

func TestRequested(t *testing.T) {
	tests := []struct {
		cmdline string
		want    bool
	}{
		{"console=ttyS0 mf.debug=1 quiet", true},
		{"mf.debug=1", true},
		{"mf.debug=0", false},
		{"mf.debug", false},
		{"xmf.debug=1", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := Requested(tc.cmdline); got != tc.want {
			t.Errorf("Requested(%q) = %v, want %v", tc.cmdline, got, tc.want)
		}
	}
}
