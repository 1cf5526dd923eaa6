package layout

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// maxTracked bounds a tracked file outside testdata: a build output (a
// 28 MB mforch binary once came in with a merge) must not enter the tree.
const maxTracked = 1 << 20

// TestNoLargeTrackedFiles fails when a file git tracks (or has staged) is
// over 1 MiB and not under a testdata folder.
func TestNoLargeTrackedFiles(t *testing.T) {
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	root := strings.TrimSpace(string(top))
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, name := range bytes.Split(out, []byte{0}) {
		rel := string(name)
		if rel == "" || tooLargeAllowed(rel) {
			continue
		}
		fi, err := os.Lstat(filepath.Join(root, rel))
		if err != nil {
			continue // deleted in the work tree, not yet committed
		}
		if fi.Mode().IsRegular() && fi.Size() > maxTracked {
			t.Errorf("%s is tracked and %d bytes (over %d): build outputs do not belong in git; git rm --cached it and list it in .gitignore, or move test data under a testdata/ folder", rel, fi.Size(), maxTracked)
		}
	}
}

func tooLargeAllowed(rel string) bool {
	for _, part := range strings.Split(filepath.ToSlash(rel), "/") {
		if part == "testdata" {
			return true
		}
	}
	return false
}
