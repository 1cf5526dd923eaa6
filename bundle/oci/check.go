package oci

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/microfaas/microfaas/bundle"
)

// defaultPath is where a bare command is looked up when the image sets no
// PATH, as container runtimes do.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// maxInterpreters bounds #! scripts run by #! scripts (the kernel allows 4).
const maxInterpreters = 4

// Check refuses, with bundle.ErrCannotRun, an image that cannot run on a
// worker whose CPU is machine: no entrypoint or cmd; an entrypoint that is
// not a regular executable file of the tree (a bare name is looked up in
// the image's PATH); an ELF for another machine, or dynamically linked
// without its loader in the tree; a #! script whose interpreter the tree
// lacks (the interpreter is checked the same way).
func Check(t *bundle.Tree, cfg bundle.Config, machine elf.Machine) error {
	argv := cfg.Argv()
	if len(argv) == 0 {
		return fmt.Errorf("%w: the image has no entrypoint or cmd: set ENTRYPOINT in its Dockerfile", bundle.ErrCannotRun)
	}
	p, ok := lookPath(t, cfg, argv[0])
	if !ok {
		return fmt.Errorf("%w: entrypoint %s is not a file in the image (PATH %s): fix ENTRYPOINT or add the file", bundle.ErrCannotRun, argv[0], imagePath(cfg))
	}
	return checkExec(t, argv[0], p, machine, 0)
}

// checkExec checks the regular file p of the tree (named what) can be
// executed.
func checkExec(t *bundle.Tree, what, p string, machine elf.Machine, depth int) error {
	e := t.Files[p]
	if e.Mode&0o111 == 0 {
		return fmt.Errorf("%w: %s is not executable (mode %o): chmod +x it in the image", bundle.ErrCannotRun, what, e.Mode)
	}
	if bytes.HasPrefix(e.Data, []byte("#!")) {
		line, _, _ := bytes.Cut(e.Data[2:], []byte("\n"))
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			return fmt.Errorf("%w: %s is a #! script with no interpreter", bundle.ErrCannotRun, what)
		}
		if depth >= maxInterpreters {
			return fmt.Errorf("%w: %s: more than %d #! interpreters in a row", bundle.ErrCannotRun, what, maxInterpreters)
		}
		ip, ok := t.Resolve(fields[0])
		if !ok {
			return fmt.Errorf("%w: %s is a script for %s, which is not a file in the image: add the interpreter to the image", bundle.ErrCannotRun, what, fields[0])
		}
		return checkExec(t, fields[0], ip, machine, depth+1)
	}
	f, err := elf.NewFile(bytes.NewReader(e.Data))
	if err != nil {
		return fmt.Errorf("%w: %s is neither an ELF executable nor a #! script", bundle.ErrCannotRun, what)
	}
	if f.Machine != machine {
		return fmt.Errorf("%w: %s is built for %s, the worker is %s: rebuild it for the worker (e.g. GOARCH, or docker buildx --platform)",
			bundle.ErrCannotRun, what, f.Machine, machine)
	}
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		interp, _ := io.ReadAll(io.LimitReader(prog.Open(), 4096))
		loader := strings.TrimRight(string(interp), "\x00")
		lp, ok := t.Resolve(loader)
		if !ok {
			return fmt.Errorf("%w: %s is dynamically linked and needs %s, which the image lacks: build it static (CGO_ENABLED=0, -static) or add its loader and libraries to the image",
				bundle.ErrCannotRun, what, loader)
		}
		if lf, err := elf.NewFile(bytes.NewReader(t.Files[lp].Data)); err != nil || lf.Machine != machine {
			return fmt.Errorf("%w: %s needs the loader %s, which is not an ELF for %s", bundle.ErrCannotRun, what, loader, machine)
		}
	}
	return nil
}

// lookPath finds the command cmd names in the tree: a path (relative ones
// from the working directory), or a bare name in the image's PATH.
func lookPath(t *bundle.Tree, cfg bundle.Config, cmd string) (string, bool) {
	if strings.Contains(cmd, "/") {
		if !path.IsAbs(cmd) {
			cmd = path.Join("/", cfg.WorkingDir, cmd)
		}
		return t.Resolve(cmd)
	}
	for _, dir := range strings.Split(imagePath(cfg), ":") {
		if dir == "" {
			continue
		}
		if p, ok := t.Resolve(path.Join("/", dir, cmd)); ok {
			return p, true
		}
	}
	return "", false
}

// imagePath is the image's PATH, or the default one.
func imagePath(cfg bundle.Config) string {
	for _, kv := range cfg.Env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			return v
		}
	}
	return defaultPath
}
