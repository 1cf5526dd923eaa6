package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// ErrPatch means a patch of the series does not apply exactly.
var ErrPatch = errors.New("patch does not apply")

// SeriesPatches lists the *.patch files of a series folder in apply order
// (by name: prefix them 0001-, 0002-, ...). A missing folder is an empty series.
func SeriesPatches(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("patches: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".patch") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}

// ApplyPatches applies each patch to the tree at dir with no fuzz and no
// offsets guessed beyond what patch(1) does exactly; the first failure stops
// and names the patch.
func ApplyPatches(dir string, patches []string) error {
	for _, p := range patches {
		cmd := exec.Command("patch", "-p1", "--forward", "--batch", "--fuzz=0", "--no-backup-if-mismatch", "-r", "-", "-i", p)
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%w: %s\n%s\n  rebase the patch on this kernel version or remove it from the series",
				ErrPatch, filepath.Base(p), strings.TrimSpace(out.String()))
		}
	}
	return nil
}
