package apt

import (
	"os/exec"
	"testing"
)

var versionCases = []struct {
	a, b string
	want int
}{
	{"6.1.192-2", "6.1.192-3", -1},
	{"6.1.192-3", "6.1.190-1", 1},
	{"6.1.192-2", "6.1.192-2", 0},
	{"2023.01+dfsg-2+deb12u3", "2023.01+dfsg-2+deb12u10", -1},
	{"2023.01+dfsg-2", "2023.01+dfsg-2+deb12u1", -1},
	{"1.0~rc1-1", "1.0-1", -1},
	{"1:1.0-1", "2.0-1", 1},
	{"1.0-1", "1.0a-1", -1},
	{"1.0", "1.0-0", 0},
	{"5.10.223-1", "5.10.218-1", 1},
	{"1.0+b1", "1.0", 1},
	{"1.0~", "1.0", -1},
	{"1.0.a", "1.0.+", -1},
}

func TestCompareVersions(t *testing.T) {
	for _, c := range versionCases {
		if got := CompareVersions(c.a, c.b); got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := CompareVersions(c.b, c.a); got != -c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.b, c.a, got, -c.want)
		}
	}
}

// TestCompareVersionsAgreesWithDpkg checks the same cases against dpkg itself.
func TestCompareVersionsAgreesWithDpkg(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not installed")
	}
	for _, c := range versionCases {
		op := map[int]string{-1: "lt", 0: "eq", 1: "gt"}[c.want]
		if err := exec.Command("dpkg", "--compare-versions", c.a, op, c.b).Run(); err != nil {
			t.Errorf("dpkg disagrees: %s %s %s", c.a, op, c.b)
		}
	}
}
