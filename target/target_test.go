package target

import (
	"errors"
	"flag"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want *Target
	}{{"x86", X86}, {"arm", ARMv7}} {
		got, err := Parse(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "ARM", "amd64", "x86 ", "armv7"} {
		if _, err := Parse(bad); !errors.Is(err, ErrUnknown) {
			t.Errorf("Parse(%q) error %v, want ErrUnknown", bad, err)
		}
	}
}

// Every target states the facts each consumer needs.
func TestTableComplete(t *testing.T) {
	for _, tg := range All {
		if tg.Name == "" || tg.KernelARCH == "" || tg.KernelImage == "" || tg.GOARCH == "" ||
			tg.OCIArch == "" || tg.ELF == 0 || tg.QEMU.Binary == "" || tg.QEMU.Machine == "" || tg.QEMU.Console == "" {
			t.Errorf("target %+v lacks a fact", tg)
		}
		if (tg.GOARCH == "arm") != (tg.GOARM != "") {
			t.Errorf("%s: GOARM %q with GOARCH %q", tg.Name, tg.GOARM, tg.GOARCH)
		}
	}
}

func TestFlag(t *testing.T) {
	tg := X86
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Var(Flag{&tg}, "arch", "")
	if err := fs.Parse([]string{"--arch", "arm"}); err != nil || tg != ARMv7 {
		t.Fatalf("--arch arm: %v, %v", tg, err)
	}
	fs = flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(nopWriter{})
	fs.Var(Flag{&tg}, "arch", "")
	if err := fs.Parse([]string{"--arch", "sparc"}); err == nil {
		t.Fatal("--arch sparc accepted")
	}
}

func TestCPUFor(t *testing.T) {
	if X86.QEMU.CPUFor("kvm") != "host" || X86.QEMU.CPUFor("tcg") != "max,-xsave" || ARMv7.QEMU.CPUFor("tcg") != "cortex-a15" {
		t.Fatal("wrong -cpu")
	}
}

type nopWriter struct{}

func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }
