package functions

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotInPath: an image's command is a bare name (CMD ["fwatchdog"])
// that no directory of the image's PATH holds as an executable file.
var ErrNotInPath = errors.New("command not found in the image's PATH")

// imageCommand is what to execute for an image's command cmd, run with
// rootfs as its root and env as its environment: a name with a slash as
// it is (a relative one from the working directory, inside the sandbox),
// a bare name looked up in the image's PATH (the default PATH when the
// image sets none) as docker does, since exec inside the sandbox does no
// lookup. Paths resolve inside rootfs (openat2 RESOLVE_IN_ROOT): an
// image's absolute symlink never reaches the worker's own files.
func imageCommand(rootfs string, env []string, cmd string) (string, error) {
	if strings.Contains(cmd, "/") {
		return cmd, nil
	}
	pathList := strings.TrimPrefix(defaultPath, "PATH=")
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathList = v
		}
	}
	root, err := os.Open(rootfs)
	if err != nil {
		return "", err
	}
	defer root.Close()
	for _, dir := range strings.Split(pathList, ":") {
		if !path.IsAbs(dir) {
			continue // "" or relative: depends on the working directory, skipped as unsafe
		}
		p := path.Join(dir, cmd)
		if executableIn(int(root.Fd()), p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s (PATH %s): name it by its path in the image's ENTRYPOINT or CMD, or add its folder to the image's PATH",
		ErrNotInPath, cmd, pathList)
}

// executableIn says whether p, resolved inside the root open at rootFD,
// is a regular file with an execute bit.
func executableIn(rootFD int, p string) bool {
	fd, err := unix.Openat2(rootFD, strings.TrimPrefix(p, "/"), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o111 != 0
}
