package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrUnknownUser means an image's USER names a user or group its
// /etc/passwd or /etc/group lacks.
var ErrUnknownUser = errors.New("unknown user or group")

// ResolveUser turns an image's USER ("name", "uid", "name:group",
// "uid:gid") into ids, reading the image's /etc/passwd and /etc/group.
// An empty USER, and root, become nobody: a function never runs as uid 0.
// A uid without a group takes its passwd entry's group, else nobody's.
func ResolveUser(rootfs, user string) (uid, gid uint32, err error) {
	if user == "" {
		return Nobody, Nobody, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	gid = Nobody
	uid, primary, found, err := lookup(filepath.Join(rootfs, "etc", "passwd"), u, 2, 3)
	if err != nil {
		return 0, 0, err
	}
	if found {
		gid = primary
	}
	if hasGroup {
		gid, _, _, err = lookup(filepath.Join(rootfs, "etc", "group"), g, 2, -1)
		if err != nil {
			return 0, 0, err
		}
	}
	if uid == 0 {
		uid = Nobody
	}
	if gid == 0 {
		gid = Nobody
	}
	return uid, gid, nil
}

// lookup finds name (or a number) in a passwd-style file: the id in field
// idField and, if extraField >= 0, a second number (the primary group).
func lookup(file, name string, idField, extraField int) (id, extra uint32, found bool, err error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		id = uint32(n)
		name = ""
	}
	f, ferr := os.Open(file)
	if ferr != nil {
		if name == "" {
			return id, 0, false, nil
		}
		return 0, 0, false, fmt.Errorf("%w: %q (the image has no %s)", ErrUnknownUser, name, filepath.Base(file))
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) <= max(idField, extraField) {
			continue
		}
		n, err := strconv.ParseUint(fields[idField], 10, 32)
		if err != nil {
			continue
		}
		if (name != "" && fields[0] == name) || (name == "" && uint32(n) == id) {
			if extraField >= 0 {
				e, err := strconv.ParseUint(fields[extraField], 10, 32)
				if err == nil {
					extra = uint32(e)
				}
			}
			return uint32(n), extra, true, nil
		}
	}
	if name == "" {
		return id, 0, false, nil
	}
	return 0, 0, false, fmt.Errorf("%w: %q is not in the image's %s", ErrUnknownUser, name, filepath.Base(file))
}

// Visible reports whether path (absolute) is inside the part of this
// machine's root that a function sees, so it needs no bind of its own.
func Visible(path string) bool {
	first, _, _ := strings.Cut(strings.TrimPrefix(filepath.Clean(path), "/"), "/")
	return first != "" && !hidden[first]
}
