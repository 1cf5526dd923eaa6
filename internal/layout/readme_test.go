package layout

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// readmeLayout returns the folders the README's "## Layout" block lists,
// module-relative: a line "name/" at an indent of 2n spaces is a folder of
// the nearest line above it indented 2(n-1); "a/b/" names a nested path.
func readmeLayout(readme string) map[string]bool {
	_, after, _ := strings.Cut(readme, "## Layout")
	_, block, _ := strings.Cut(after, "```\n")
	block, _, _ = strings.Cut(block, "```")
	listed := map[string]bool{}
	var stack []string
	for _, line := range strings.Split(block, "\n") {
		trimmed := strings.TrimLeft(line, " ")
		name, _, _ := strings.Cut(trimmed, " ")
		if !strings.HasSuffix(name, "/") {
			continue
		}
		depth := (len(line) - len(trimmed)) / 2
		if depth > len(stack) {
			depth = len(stack)
		}
		stack = append(stack[:depth], strings.TrimSuffix(name, "/"))
		listed[strings.Join(stack, "/")] = true
	}
	return listed
}

// TestReadmeLayoutListsEveryPackage fails when a package of the module is
// missing from the README's layout, or the layout names a folder that does
// not exist.
func TestReadmeLayoutListsEveryPackage(t *testing.T) {
	root := strings.TrimSpace(run(t, "", "go", "list", "-m", "-f", "{{.Dir}}"))
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	listed := readmeLayout(string(readme))
	if len(listed) < 10 {
		t.Fatalf("README.md: found %d folders in the \"## Layout\" block; is the block still there?", len(listed))
	}
	for _, dir := range strings.Fields(run(t, root, "go", "list", "-f", "{{.Dir}}", "./...")) {
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			t.Fatal(err)
		}
		if !listed[filepath.ToSlash(rel)] {
			t.Errorf("package folder %s is not in README.md's layout: add a line for it (what it does, in a few words)", rel)
		}
	}
	for dir := range listed {
		if fi, err := os.Stat(filepath.Join(root, dir)); err != nil || !fi.IsDir() {
			t.Errorf("README.md's layout names %s/, which is not a folder: remove or fix the line", dir)
		}
	}
}

// run runs a command in dir ("" for the test's own) and returns its output.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out)
}
