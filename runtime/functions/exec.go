package functions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// User functions are executables in the initramfs, with the contract of
// OpenFaaS's classic watchdog: the request body on stdin, the response on
// stdout; a non-zero exit or an overrun deadline is an error carrying the
// tail of stderr.
//
// Two shapes live under Env.FunctionsDir:
//
//	NAME              an executable file (a static binary or a script whose
//	                  interpreter is in the initramfs)
//	NAME/rootfs/...   a container image's flattened filesystem, with
//	NAME/config.json  its entrypoint, environment and working directory
//	                  (ImageConfig); run chrooted into rootfs.

// ImageConfig is the part of a container image's config a worker needs.
type ImageConfig struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workdir,omitempty"`
}

// Argv is the command an image runs: entrypoint then cmd, as container
// runtimes do.
func (c ImageConfig) Argv() []string {
	return append(append([]string{}, c.Entrypoint...), c.Cmd...)
}

// stderrTail bounds the stderr kept for an error message.
const stderrTail = 2048

// maxOutput bounds a user function's stdout.
const maxOutput = 16 << 20

// UserNames lists the user functions under dir, sorted.
func UserNames(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		if _, ok := LookupUser(dir, e.Name()); ok {
			names = append(names, e.Name())
		}
	}
	return names
}

// LookupUser finds a user function under dir; ok is false if there is none.
func LookupUser(dir, name string) (Func, bool) {
	if dir == "" || name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, false
	}
	p := filepath.Join(dir, name)
	fi, err := os.Stat(p)
	if err != nil {
		return nil, false
	}
	if fi.IsDir() {
		return func(ctx context.Context, env Env, args json.RawMessage) (any, error) {
			return runImage(ctx, name, p, args, env.ProcessEnv)
		}, true
	}
	if fi.Mode()&0o111 == 0 {
		return nil, false
	}
	return func(ctx context.Context, env Env, args json.RawMessage) (any, error) {
		cmd := exec.CommandContext(ctx, p)
		cmd.Env = withEnv(os.Environ(), env.ProcessEnv)
		return run(ctx, name, cmd, args)
	}, true
}

// withEnv appends extra variables (sorted, so runs are repeatable) to base.
func withEnv(base []string, extra map[string]string) []string {
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		base = append(base, k+"="+extra[k])
	}
	return base
}

func runImage(ctx context.Context, name, dir string, args json.RawMessage, extraEnv map[string]string) (any, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("%s: image config: %w", name, err)
	}
	var cfg ImageConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: image config: %w", name, err)
	}
	argv := cfg.Argv()
	if len(argv) == 0 {
		return nil, fmt.Errorf("%s: the image has no entrypoint or cmd", name)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = withEnv(append([]string(nil), cfg.Env...), extraEnv)
	cmd.Dir = cfg.WorkingDir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: filepath.Join(dir, "rootfs")}
	// exec.Command resolved argv[0] against our PATH, not the image's: use
	// it as given, inside the chroot.
	cmd.Path = argv[0]
	cmd.Err = nil
	return run(ctx, name, cmd, args)
}

// run feeds the request to cmd and returns its stdout as a string.
func run(ctx context.Context, name string, cmd *exec.Cmd, args json.RawMessage) (any, error) {
	cmd.Stdin = bytes.NewReader(requestBody(args))
	var stdout limitedBuffer
	stdout.max = maxOutput
	var stderr tailBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// A process group, so a deadline kills the function's children too.
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err := cmd.Run()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%s: %w (stderr: %s)", name, ctx.Err(), stderr.String())
	}
	if stdout.overflow {
		return nil, fmt.Errorf("%s: output larger than %d bytes", name, maxOutput)
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("%s: exited with %s: %s", name, ee.ProcessState, strings.TrimSpace(stderr.String()))
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return stdout.String(), nil
}

// requestBody is what a user function reads on stdin: a JSON string's
// contents (an HTTP body that was not JSON), else the JSON itself.
func requestBody(args json.RawMessage) []byte {
	var s string
	if len(args) > 0 && args[0] == '"' && json.Unmarshal(args, &s) == nil {
		return []byte(s)
	}
	return args
}

type limitedBuffer struct {
	bytes.Buffer
	max      int
	overflow bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if l.Len()+len(p) > l.max {
		l.overflow = true
		return 0, errors.New("output too large")
	}
	return l.Buffer.Write(p)
}

// tailBuffer keeps the last stderrTail bytes written.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > stderrTail {
		t.b = t.b[len(t.b)-stderrTail:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
