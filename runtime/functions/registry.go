// Package functions holds the worker's built-in functions (the MicroFaaS
// workload suite) and the registry the worker looks them up in.
//
// A function takes its arguments as the JSON object the orchestrator sent
// (the job's f_args) and returns a JSON-encodable result or an error. Errors
// are returned to the caller as the job's error text, so they must say what
// was wrong with the input. docs/functions.md describes every function.
package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
)

// Env is what a function may use besides its arguments: addresses and
// credentials of the services the cluster file names. Nothing in it is
// hard-coded; the worker fills it from its boot parameters or the job.
type Env struct {
	// Services maps a service name ("redis", "postgres", "s3", "kafka") to
	// its settings (address, user, password, bucket, ...).
	Services map[string]map[string]string
	// Stdin-style user functions live under this directory in the
	// initramfs (one executable per function).
	FunctionsDir string
	// EtcDir is the directory upload_file reads its files from. Empty means
	// /etc (the worker's own); tests point it at a temporary directory.
	EtcDir string
	// DownloadDir is the directory download_file writes objects into.
	// Empty means /tmp (a tmpfs on the worker).
	DownloadDir string
	// ProcessEnv is added to user functions' environment (the job's env,
	// OpenFaaS envVars).
	ProcessEnv map[string]string
	// Secrets are files a user function finds in SecretsDir (default
	// /var/openfaas/secrets) for the job's duration, as OpenFaaS mounts them.
	Secrets    map[string][]byte
	SecretsDir string
	// Log, if set, also receives a user function's stderr: the worker
	// sends its tail back with the result (protocol.Result.Log).
	Log io.Writer
}

// Service returns the settings for a named service, or an error telling the
// operator where to configure it.
func (e Env) Service(name string) (map[string]string, error) {
	s, ok := e.Services[name]
	if !ok || len(s) == 0 {
		return nil, fmt.Errorf("service %q is not configured: add it under services: in the cluster file", name)
	}
	return s, nil
}

func (e Env) etcDir() string {
	if e.EtcDir == "" {
		return "/etc"
	}
	return e.EtcDir
}

func (e Env) downloadDir() string {
	if e.DownloadDir == "" {
		return "/tmp"
	}
	return e.DownloadDir
}

// Func is the signature of a built-in function.
type Func func(ctx context.Context, env Env, args json.RawMessage) (any, error)

// ErrUnknown is returned by Lookup for a name that is not registered.
var ErrUnknown = errors.New("unknown function")

var (
	mu       sync.RWMutex
	registry = map[string]Func{}
)

// Register adds a built-in function. It panics on a duplicate name, which is
// a programming error caught by any test that imports the package.
func Register(name string, fn Func) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[name]; dup {
		panic("functions: duplicate registration of " + name)
	}
	registry[name] = fn
}

// Lookup returns the function registered under name. A catalogued
// function this worker was built without is ErrUnknown too, with the
// service client it lacks named.
func Lookup(name string) (Func, error) {
	mu.RLock()
	defer mu.RUnlock()
	fn, ok := registry[name]
	if ok {
		return fn, nil
	}
	if e, known := Describe(name); known {
		return nil, fmt.Errorf("%w %q: this worker was built without the %v client it needs; rebuild it with mfbuild --functions all, or a list naming %s",
			ErrUnknown, name, e.Services, name)
	}
	return nil, fmt.Errorf("%w %q (built in: %v)", ErrUnknown, name, namesLocked())
}

// Names lists the registered functions, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	return namesLocked()
}

func namesLocked() []string {
	n := make([]string, 0, len(registry))
	for k := range registry {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}
