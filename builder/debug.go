package builder

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/microfaas/microfaas/initramfs"
	"github.com/microfaas/microfaas/internal/cache"
	"github.com/microfaas/microfaas/internal/progress"
)

// Debug images (mfbuild image --debug) carry a shell and diagnostic tools for
// the serial console, for bringing up a new board: u-root's commands compiled
// into one multi-call binary with gobusybox's makebb (one Go runtime for all
// of them: 12 commands in about 5 MiB instead of 26 MiB as separate
// binaries), installed as /bin/bb with a /bin/NAME link per command. Nothing
// listens on the network: runtime/debugshell runs the shell on the console.

// DebugCommands are the u-root commands of a debug image.
var DebugCommands = []string{"gosh", "ls", "cat", "dmesg", "ip", "ps", "mount", "free", "hexdump", "ping", "df", "uptime"}

// Pinned versions of the debug tools' sources (fetched through the Go module
// proxy; go.sum of the generated module is checked against the checksum
// database as for any module).
const (
	urootVersion     = "v0.16.0"
	gobusyboxVersion = "v0.0.0-20250101170133-2e884e4509c7"
	// makebb needs a golang.org/x/tools that builds with this Go.
	xtoolsVersion = "v0.52.0"
)

// DebugTools builds (or takes from the cache) the debug busybox for goarch.
func DebugTools(ctx context.Context, o Options, goarch, goarm string) (string, error) {
	h := cache.NewHasher()
	h.Add("uroot", urootVersion)
	h.Add("gobusybox", gobusyboxVersion)
	h.Add("xtools", xtoolsVersion)
	h.Add("commands", strings.Join(DebugCommands, ","))
	h.Add("target", goarch+"/"+goarm)
	h.Add("go", runtime.Version())
	key := h.Key()
	if o.Cache.Has("debug-tools", key) {
		return filepath.Join(o.Cache.Path("debug-tools", key), "bb"), nil
	}
	dir, err := o.Cache.Fill("debug-tools", key, func(out string) error {
		mod := filepath.Join(out, "mod")
		if err := os.MkdirAll(mod, 0o755); err != nil {
			return err
		}
		gomod := fmt.Sprintf("module mfdebugtools\n\ngo 1.26\n\nrequire (\n\tgithub.com/u-root/u-root %s\n\tgithub.com/u-root/gobusybox/src %s\n\tgolang.org/x/tools %s\n)\n",
			urootVersion, gobusyboxVersion, xtoolsVersion)
		imports := []string{"github.com/u-root/gobusybox/src/cmd/makebb"}
		for _, c := range DebugCommands {
			imports = append(imports, "github.com/u-root/u-root/cmds/core/"+c)
		}
		var tools strings.Builder
		tools.WriteString("//go:build tools\n\npackage tools\n\nimport (\n")
		for _, i := range imports {
			fmt.Fprintf(&tools, "\t_ %q\n", i)
		}
		tools.WriteString(")\n")
		if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte(gomod), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(mod, "tools.go"), []byte(tools.String()), 0o644); err != nil {
			return err
		}
		defer os.RemoveAll(mod)
		step := progress.Start("build u-root debug tools for " + goarch)
		err := func() error {
			host := []string{"CGO_ENABLED=0", "GOFLAGS=-mod=mod"}
			if _, err := goCmd(ctx, mod, host, "mod", "tidy"); err != nil {
				return err
			}
			makebb := filepath.Join(mod, "makebb")
			if _, err := goCmd(ctx, mod, host, "build", "-o", makebb, "github.com/u-root/gobusybox/src/cmd/makebb"); err != nil {
				return err
			}
			urootDir, err := goCmd(ctx, mod, host, "list", "-m", "-f", "{{.Dir}}", "github.com/u-root/u-root")
			if err != nil {
				return err
			}
			args := []string{"-go-mod=mod", "-o", filepath.Join(out, "bb")}
			for _, c := range DebugCommands {
				args = append(args, filepath.Join(strings.TrimSpace(urootDir), "cmds", "core", c))
			}
			cmd := exec.CommandContext(ctx, makebb, args...)
			cmd.Dir = mod
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOARM="+goarm, "GOFLAGS=-mod=mod")
			if b, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("makebb: %w\n%s", err, lastLines(string(b), 20))
			}
			return nil
		}()
		step.Done(err)
		if err != nil {
			return fmt.Errorf("debug tools (u-root %s through gobusybox; needs the Go module proxy): %w", urootVersion, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "bb"), nil
}

func goCmd(ctx context.Context, dir string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, lastLines(stderr.String(), 20))
	}
	return out.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// debugInitramfs adds the debug busybox and its command links.
func debugInitramfs(ctx context.Context, o Options, goarch, goarm string) ([]initramfs.Option, map[string]string, error) {
	bb, err := DebugTools(ctx, o, goarch, goarm)
	if err != nil {
		return nil, nil, err
	}
	sum, _, err := cache.FileSHA256(bb)
	if err != nil {
		return nil, nil, err
	}
	opts := []initramfs.Option{initramfs.WithFile("bin/bb", bb, 0o755)}
	for _, c := range DebugCommands {
		opts = append(opts, initramfs.WithSymlink("bin/"+c, "bb"))
	}
	return opts, map[string]string{"debug-tools": sum}, nil
}
