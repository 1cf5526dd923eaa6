package builder

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/microfaas/microfaas/initramfs"
	"github.com/microfaas/microfaas/internal/testfn"
	"github.com/microfaas/microfaas/target"
)

func buildWordcount(t *testing.T, goarch string) []byte {
	return testfn.Wordcount(t, repo(t), goarch)
}

func makeImage(t *testing.T, arch string, files map[string][]byte, symlinks map[string]string, entrypoint ...string) v1.Image {
	return testfn.Image(t, arch, files, symlinks, entrypoint...)
}

func archiveNames(t *testing.T, opts []initramfs.Option) map[string]bool {
	t.Helper()
	a, err := initramfs.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, n := range a.Names() {
		names[n] = true
	}
	return names
}

func TestExecutableFunctions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	wc := filepath.Join(dir, "wordcount")
	os.WriteFile(wc, buildWordcount(t, target.X86.GOARCH), 0o755)
	wcArm := filepath.Join(dir, "wordcount-arm")
	os.WriteFile(wcArm, buildWordcount(t, target.ARMv7.GOARCH), 0o755)
	py := filepath.Join(dir, "fn.py")
	os.WriteFile(py, []byte("#!/usr/bin/python3\nprint(1)\n"), 0o755)
	tests := []struct {
		name, spec string
		want       []string
		wantErr    string
	}{
		{"static binary", wc, []string{"functions/f"}, ""},
		{"shell script gets busybox", "../examples/functions/hello.sh", []string{"functions/f", "bin/busybox", "bin/sh", "bin/sleep"}, ""},
		{"dynamic binary refused", "/bin/ls", nil, "dynamically linked"},
		{"wrong architecture refused", wcArm, nil, "built for EM_ARM"},
		{"other interpreter refused", py, nil, `interpreter "/usr/bin/python3" is not in the worker`},
		{"missing file", filepath.Join(dir, "nope"), nil, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.Contains(tt.name, "busybox") {
				if _, err := os.Stat(BusyboxPath); err != nil && os.Getenv("CI") == "" {
					t.Skip("busybox-static not installed")
				}
			}
			opts, _, err := functionOptions(ctx, target.X86, "f", tt.spec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			names := archiveNames(t, opts)
			for _, w := range tt.want {
				if !names[w] {
					t.Errorf("initramfs lacks %s", w)
				}
			}
		})
	}
}

// TestImageFunctions pulls function images through a real registry protocol
// (go-containerregistry's registry, in process), an OCI layout directory and
// a docker-save tarball, and checks what cannot run is refused.
func TestImageFunctions(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	wc := buildWordcount(t, target.X86.GOARCH)
	good := makeImage(t, "amd64", map[string][]byte{"app/wordcount": wc}, map[string]string{"app/wc": "wordcount"}, "/app/wc")
	push := func(tag string, img v1.Image) string {
		ref := host + "/fn/" + tag
		r, err := name.ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(r, img); err != nil {
			t.Fatal(err)
		}
		return ref
	}
	layoutDir := filepath.Join(t.TempDir(), "oci")
	lp, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(good, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "wc.tar")
	tagRef, _ := name.NewTag("example.com/wc:latest")
	if err := tarball.WriteToFile(tarPath, tagRef, good); err != nil {
		t.Fatal(err)
	}
	dynamic, _ := os.ReadFile("/bin/ls")
	tests := []struct {
		name, ref string
		wantErr   string
	}{
		{"registry", push("wc:latest", good), ""},
		{"oci layout", layoutDir, ""},
		{"docker save tarball", tarPath, ""},
		{"wrong architecture", push("arm:latest", makeImage(t, "arm64", map[string][]byte{"app/wordcount": wc}, nil, "/app/wordcount")), "has no image for linux/amd64 (it has: linux/arm64)"},
		{"dynamic without loader", push("dyn:latest", makeImage(t, "amd64", map[string][]byte{"bin/ls": dynamic}, nil, "/bin/ls")), "dynamically linked"},
		{"no entrypoint file", push("missing:latest", makeImage(t, "amd64", map[string][]byte{"app/x": wc}, nil, "/app/nope")), "entrypoint /app/nope is not a file in the image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, digest, err := functionOptions(ctx, target.X86, "wc", "oci:"+tt.ref)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrCannotRun) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrCannotRun with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(digest, "sha256:") {
				t.Errorf("input hash %q is not the image digest", digest)
			}
			names := archiveNames(t, opts)
			for _, w := range []string{"functions/wc/config.json", "functions/wc/rootfs/app/wordcount", "functions/wc/rootfs/app/wc"} {
				if !names[w] {
					t.Errorf("initramfs lacks %s", w)
				}
			}
		})
	}
}
