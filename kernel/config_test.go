package kernel

import (
	"errors"
	"strings"
	"testing"
)

func TestParseFragment(t *testing.T) {
	tests := []struct {
		name, in string
		want     Fragment
		wantErr  string
	}{
		{"set and unset", "CONFIG_A=y\n# CONFIG_B is not set\n\n# comment\nCONFIG_C=\"x y\"\n",
			Fragment{"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": `"x y"`}, ""},
		{"numbers", "CONFIG_HZ=100\n", Fragment{"CONFIG_HZ": "100"}, ""},
		{"garbage line", "CONFIG_A=y\nA=y\n", nil, "frag:2: not a kconfig line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFragment("frag", strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestMerge(t *testing.T) {
	base := "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n"
	got := Merge(base, Fragment{"CONFIG_B": "y", "CONFIG_C": "n", "CONFIG_Z": "y", "CONFIG_D": "1"})
	want := "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=1\nCONFIG_Z=y\n"
	if got != want {
		t.Fatalf("Merge:\n%s\nwant:\n%s", got, want)
	}
}

func TestCheck(t *testing.T) {
	final := Fragment{"CONFIG_A": "y", "CONFIG_C": "m"}
	tests := []struct {
		name    string
		frag    Fragment
		dropped []string
	}{
		{"kept", Fragment{"CONFIG_A": "y"}, nil},
		{"unset satisfied by absence", Fragment{"CONFIG_B": "n"}, nil},
		{"dropped", Fragment{"CONFIG_A": "y", "CONFIG_GONE": "y"}, []string{"CONFIG_GONE"}},
		{"changed", Fragment{"CONFIG_C": "y"}, []string{"CONFIG_C"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(final, []NamedFragment{{"f.config", tt.frag}})
			if len(tt.dropped) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var de *DroppedError
			if !errors.As(err, &de) || !errors.Is(err, ErrDroppedSymbol) {
				t.Fatalf("err = %v, want a DroppedError", err)
			}
			for _, s := range tt.dropped {
				if !strings.Contains(err.Error(), s+" (from f.config)") {
					t.Errorf("error does not name %s: %v", s, err)
				}
			}
		})
	}
}

func TestMakefileVersion(t *testing.T) {
	tests := []struct{ in, want string }{
		{"# SPDX\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\n", "6.1.192"},
		{"VERSION = 5\nPATCHLEVEL = 11\nSUBLEVEL = 22\n", "5.11.22"},
	}
	for _, tt := range tests {
		got, err := MakefileVersion(strings.NewReader(tt.in))
		if err != nil || got != tt.want {
			t.Errorf("MakefileVersion = %q, %v; want %q", got, err, tt.want)
		}
	}
	if _, err := MakefileVersion(strings.NewReader("all:\n\techo\n")); err == nil {
		t.Error("a non-kernel Makefile was accepted")
	}
}

func TestSeriesOf(t *testing.T) {
	for in, want := range map[string]string{"6.1.192": "6.1", "5.11.22": "5.11", "6.1": "6.1"} {
		if got := SeriesOf(in); got != want {
			t.Errorf("SeriesOf(%q) = %q, want %q", in, got, want)
		}
	}
}
