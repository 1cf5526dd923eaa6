package sandbox

import "testing"

func TestLimitsWithDefaults(t *testing.T) {
	d := DefaultLimits()
	// Nice 19 is for a worker (PID 1) only.
	if d.Procs == 0 || d.Memory < 64<<20 || d.Tmp < 16<<20 || d.FileSize == 0 || d.Files == 0 || d.Nice != 0 {
		t.Fatalf("DefaultLimits() = %+v", d)
	}
	tests := []struct {
		name string
		in   Limits
		want Limits
	}{
		{"zero takes every default", Limits{}, d},
		{"set fields kept", Limits{Procs: 7, Memory: 1 << 20, FileSize: 3, Files: 9, Tmp: 5, Nice: 4},
			Limits{Procs: 7, Memory: 1 << 20, FileSize: 3, Files: 9, Tmp: 5, Nice: 4}},
		{"nice out of range", Limits{Nice: 40}, d},
		{"negative nice (more CPU than the worker) refused", Limits{Nice: -5}, d},
	}
	for _, tt := range tests {
		if got := tt.in.withDefaults(); got != tt.want {
			t.Errorf("%s: %+v.withDefaults() = %+v, want %+v", tt.name, tt.in, got, tt.want)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		"/run/mf-sandbox":      "/run/mf-sandbox",
		`/tmp/a\040b`:          "/tmp/a b",
		`/x\011y\012z\134w`:    "/x\ty\nz\\w",
		`/trailing\04`:         `/trailing\04`,
		`/not\999octal`:        `/not\999octal`,
		`/run/mf-sandbox/proc`: "/run/mf-sandbox/proc",
		`\040`:                 " ",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTmpfsSize(t *testing.T) {
	for n, want := range map[uint64]string{
		64 << 20: "size=67108864,nr_inodes=8192",
		1 << 20:  "size=1048576,nr_inodes=1024",
	} {
		if got := tmpfsSize(n); got != want {
			t.Errorf("tmpfsSize(%d) = %q, want %q", n, got, want)
		}
	}
}
