package functions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/microfaas/microfaas/bundle"
	"github.com/microfaas/microfaas/runtime/sandbox"
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
//	NAME/config.json  its entrypoint, environment, working directory and user
//	                  (ImageConfig); run with rootfs as its root.
//
// Both run contained (runtime/sandbox): their own uid, no capabilities,
// their own namespaces; the whole process tree ends with the run.

// ImageConfig is the part of a container image's config a worker needs:
// a bundle's config (one type for images baked in and deployed at run time).
type ImageConfig = bundle.Config

// defaultPath is a plain executable's PATH. Functions get a clean
// environment: PID 1's own (the kernel passes it unknown boot parameters)
// is never theirs.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

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
	p, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		return nil, false
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, false
	}
	if fi.IsDir() {
		return Image(name, p), true
	}
	if fi.Mode()&0o111 == 0 {
		return nil, false
	}
	return func(ctx context.Context, env Env, args json.RawMessage) (any, error) {
		spec := sandbox.Spec{Path: p, Args: []string{p}, Env: withEnv([]string{defaultPath, "HOME=/"}, env.ProcessEnv),
			UID: sandbox.Nobody, GID: sandbox.Nobody, Secrets: env.Secrets, SecretsDir: env.SecretsDir}
		if !sandbox.Visible(p) {
			spec.Binds = []string{p}
		}
		return run(ctx, name, spec, args, env.Log)
	}, true
}

// Image is the function laid out in dir as a flattened container image,
// dir/config.json and dir/rootfs: a user function baked into the worker's
// image, or a run-time deployed bundle the worker unpacked. It runs with
// the stdin → stdout contract.
func Image(name, dir string) Func {
	return func(ctx context.Context, env Env, args json.RawMessage) (any, error) {
		spec, _, err := imageSpec(name, dir, env)
		if err != nil {
			return nil, err
		}
		return run(ctx, name, spec, args, env.Log)
	}
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

// imageSpec reads an image function's config: its command, environment,
// working directory and user, run in its rootfs.
func imageSpec(name, dir string, env Env) (sandbox.Spec, ImageConfig, error) {
	var cfg ImageConfig
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return sandbox.Spec{}, cfg, fmt.Errorf("%s: image config: %w", name, err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return sandbox.Spec{}, cfg, fmt.Errorf("%s: image config: %w", name, err)
	}
	argv := cfg.Argv()
	if len(argv) == 0 {
		return sandbox.Spec{}, cfg, fmt.Errorf("%s: the image has no entrypoint or cmd", name)
	}
	rootfs := filepath.Join(dir, "rootfs")
	uid, gid, err := sandbox.ResolveUser(rootfs, cfg.User)
	if err != nil {
		return sandbox.Spec{}, cfg, fmt.Errorf("%s: image user: %w", name, err)
	}
	procEnv := withEnv(append([]string(nil), cfg.Env...), env.ProcessEnv)
	cmd, err := imageCommand(rootfs, procEnv, argv[0])
	if err != nil {
		return sandbox.Spec{}, cfg, fmt.Errorf("%s: %w", name, err)
	}
	return sandbox.Spec{Path: cmd, Args: argv, Env: procEnv,
		Dir: cfg.WorkingDir, Root: rootfs, UID: uid, GID: gid,
		Secrets: env.Secrets, SecretsDir: env.SecretsDir}, cfg, nil
}

// run runs spec contained, feeding it the request, and returns its stdout
// as a string. The whole process tree ends with the run: when the function's
// main process exits, or at the deadline.
func run(ctx context.Context, name string, spec sandbox.Spec, args json.RawMessage, log io.Writer) (any, error) {
	var stdout limitedBuffer
	stdout.max = maxOutput
	var stderr tailBuffer
	var errw io.Writer = &stderr
	if log != nil {
		errw = io.MultiWriter(&stderr, log)
	}
	stdin := bytes.NewReader(requestBody(args))
	err := sandbox.Run(ctx, spec, stdin, &stdout, errw)
	if errors.Is(err, sandbox.ErrUncontained) {
		err = uncontained(ctx, spec, stdin, &stdout, errw)
	}
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
		if errors.Is(err, syscall.ENOENT) && spec.Root != "" && spec.Dir != "" && spec.Dir != "/" {
			// exec reports a working directory it cannot enter as the
			// executable missing.
			return nil, fmt.Errorf("%s: %w (or the image's working directory %s is not in its filesystem)", name, err, spec.Dir)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return stdout.String(), nil
}

// uncontained runs spec as a plain child in its own process group, for
// machines where sandbox.Available is None (logged there): only images
// and secrets are refused, since they need a root of their own.
func uncontained(ctx context.Context, spec sandbox.Spec, stdin io.Reader, stdout, stderr io.Writer) error {
	if spec.Root != "" {
		return fmt.Errorf("container image functions need containment: %w", sandbox.ErrUncontained)
	}
	if len(spec.Secrets) > 0 {
		return fmt.Errorf("secrets need containment: %w", sandbox.ErrUncontained)
	}
	cmd := exec.CommandContext(ctx, spec.Path)
	cmd.Args, cmd.Env = spec.Args, spec.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd.Run()
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
