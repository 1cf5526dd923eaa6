package builder

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/microfaas/microfaas/runtime/functions"
	"github.com/microfaas/microfaas/target"
)

// initFrom extracts /init from an initramfs (gzip or plain) into a file.
func initFrom(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Name == "init" {
			data, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "mfinit")
			os.WriteFile(out, data, 0o755)
			return out
		}
	}
	t.Fatal("no init in the initramfs")
	return ""
}

// TestInitramfsBuiltins builds x86 workers with a selection of built-in
// functions and asks each worker binary which functions it carries.
func TestInitramfsBuiltins(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles mfinit")
	}
	var compute, services []string
	for _, n := range functions.Names() {
		if e, _ := functions.Describe(n); e.Kind() == functions.KindService {
			services = append(services, n)
		} else {
			compute = append(compute, n)
		}
	}
	tests := []struct {
		builtins, compress string
		want               []string
	}{
		{"compute", "", compute},
		{"redis_insert,matmul", CompressGzip, append(slices.Clone(compute), "redis_insert", "redis_modify")},
	}
	for _, tt := range tests {
		o := Options{RepoDir: repo(t), Arch: target.X86, Builtins: tt.builtins, Compress: tt.compress}
		info, err := Initramfs(context.Background(), o, filepath.Join(t.TempDir(), "initramfs.cpio"))
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(initFrom(t, info.Path), "functions").Output()
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Fields(string(out))
		slices.Sort(tt.want)
		if !slices.Equal(got, tt.want) {
			t.Errorf("--functions %s: the worker carries %v, want %v", tt.builtins, got, tt.want)
		}
		t.Logf("--functions %s --compress %q: initramfs %d bytes, init %d bytes", tt.builtins, tt.compress, info.Size, info.Init.Size)
	}
	if len(services) == 0 {
		t.Fatal("no service functions registered")
	}
}

func TestInitramfsBadSelection(t *testing.T) {
	tests := []struct {
		o    Options
		want error
	}{
		{Options{Arch: target.X86, Builtins: "matmul,nope"}, functions.ErrSelection},
		{Options{Arch: target.X86, Compress: "zip"}, ErrCompress},
		{Options{Arch: target.ARMv7, Compress: CompressGzip}, ErrCompress},
	}
	for _, tt := range tests {
		tt.o.RepoDir = repo(t)
		out := filepath.Join(t.TempDir(), "initramfs.cpio")
		if _, err := Initramfs(context.Background(), tt.o, out); !errors.Is(err, tt.want) {
			t.Errorf("%+v: err %v, want %v", tt.o, err, tt.want)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%+v: wrote %s despite the error", tt.o, out)
		}
	}
}
