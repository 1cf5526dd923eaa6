package functions

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildExample compiles the wordcount example as a static binary.
func buildExample(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "wordcount")
	cmd := exec.Command("go", "build", "-o", out, "../../examples/functions/wordcount")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build example: %v\n%s", err, b)
	}
	return out
}

func TestUserFunctions(t *testing.T) {
	dir := t.TempDir()
	buildExample(t, dir)
	script, err := os.ReadFile("../../examples/functions/hello.sh")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "hello"), script, 0o755)
	os.WriteFile(filepath.Join(dir, "sleepy"), []byte("#!/bin/sh\necho started >&2\nsleep 30\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "notexec"), []byte("data"), 0o644)
	tests := []struct {
		name, fn string
		args     string
		timeout  time.Duration
		want     string
		wantErr  string
	}{
		{"go binary, JSON body", "wordcount", `{"a": 1}`, 5 * time.Second, `{"bytes":9,"lines":1,"words":2}` + "\n", ""},
		{"go binary, text body", "wordcount", `"one two\nthree\n"`, 5 * time.Second, `{"bytes":14,"lines":2,"words":3}` + "\n", ""},
		{"shell", "hello", `"Ada\n"`, 5 * time.Second, "Hello, Ada!\n", ""},
		{"non-zero exit carries stderr", "hello", `""`, 5 * time.Second, "", "empty request: send a name"},
		{"deadline kills it", "sleepy", `""`, 300 * time.Millisecond, "", "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fn, ok := LookupUser(dir, tt.fn)
			if !ok {
				t.Fatalf("%s not found", tt.fn)
			}
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			start := time.Now()
			got, err := fn(ctx, Env{}, json.RawMessage(tt.args))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if time.Since(start) > 5*time.Second {
					t.Fatal("the overrunning function was not killed")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	for _, name := range []string{"notexec", "missing", "../etc", ""} {
		if _, ok := LookupUser(dir, name); ok {
			t.Errorf("LookupUser(%q) found a function", name)
		}
	}
}

// TestImageFunction runs a function laid out as a flattened container image:
// chrooted into its rootfs with its entrypoint, environment and workdir.
func TestImageFunction(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root (the worker is PID 1 as root)")
	}
	dir := t.TempDir()
	fdir := filepath.Join(dir, "wc")
	os.MkdirAll(filepath.Join(fdir, "rootfs", "app"), 0o755)
	bin := buildExample(t, t.TempDir())
	b, _ := os.ReadFile(bin)
	os.WriteFile(filepath.Join(fdir, "rootfs", "app", "wordcount"), b, 0o755)
	cfg, _ := json.Marshal(ImageConfig{Entrypoint: []string{"/app/wordcount"}, WorkingDir: "/app", Env: []string{"X=1"}})
	os.WriteFile(filepath.Join(fdir, "config.json"), cfg, 0o644)
	fn, ok := LookupUser(dir, "wc")
	if !ok {
		t.Fatal("image function not found")
	}
	got, err := fn(context.Background(), Env{}, json.RawMessage(`"a b c"`))
	if err != nil {
		t.Fatal(err)
	}
	if got != `{"bytes":6,"lines":1,"words":3}`+"\n" {
		t.Fatalf("got %q", got)
	}
	// An image whose entrypoint is not in its rootfs fails clearly.
	cfg, _ = json.Marshal(ImageConfig{Entrypoint: []string{"/nope"}})
	os.WriteFile(filepath.Join(fdir, "config.json"), cfg, 0o644)
	_, err = fn(context.Background(), Env{}, json.RawMessage(`""`))
	if err == nil || !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing entrypoint: err = %v", err)
	}
	// A working directory the image lacks fails as a missing executable
	// does: the error says it may be either.
	cfg, _ = json.Marshal(ImageConfig{Entrypoint: []string{"/app/wordcount"}, WorkingDir: "/nowhere"})
	os.WriteFile(filepath.Join(fdir, "config.json"), cfg, 0o644)
	_, err = fn(context.Background(), Env{}, json.RawMessage(`""`))
	if err == nil || !strings.Contains(err.Error(), "working directory /nowhere is not in its filesystem") {
		t.Fatalf("missing working directory: err = %v", err)
	}
}
