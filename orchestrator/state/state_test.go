package state

import "testing"

func TestIsOn(t *testing.T) {
	for _, tt := range []struct {
		s    Name
		want bool
	}{
		{Off, false}, {Booting, true}, {Idle, true}, {Working, true}, {Stopping, true}, {Failed, false}, {"", false}, {"baseline", false},
	} {
		if got := IsOn(tt.s); got != tt.want {
			t.Errorf("IsOn(%q) = %v, want %v", tt.s, got, tt.want)
		}
	}
	for _, s := range On {
		if !IsOn(s) {
			t.Errorf("%s is in On but not IsOn", s)
		}
	}
}
