package layout

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeCommands returns the README's command lines: those of the block
// that starts with "mfbuild kernel", one per line, as "prog sub rest".
func readmeCommands(readme string) [][]string {
	var out [][]string
	for _, line := range strings.Split(readme, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "mfbuild" || f[0] == "mforch" || f[0] == "mfinit") && !strings.HasPrefix(f[1], "-") {
			out = append(out, f)
		}
	}
	return out
}

var flagRE = regexp.MustCompile(`(^|[\s\[|])--([a-z0-9][a-z0-9-]*)`)

// TestReadmeCommandsExist builds the three programs and fails when the
// README's command list names a subcommand or flag the program does not
// have, or leaves out a subcommand the program has.
func TestReadmeCommandsExist(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the programs")
	}
	root := strings.TrimSpace(run(t, "", "go", "list", "-m", "-f", "{{.Dir}}"))
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	run(t, root, "go", "build", "-o", bin+"/", "./cmd/mfbuild", "./cmd/mforch", "./cmd/mfinit")
	help := func(args ...string) string {
		out, _ := exec.Command(filepath.Join(bin, args[0]), args[1:]...).CombinedOutput() // -h exits 0 or 2
		return string(out)
	}
	listed := map[string]bool{}
	for _, f := range readmeCommands(string(readme)) {
		prog, sub := f[0], f[1]
		listed[prog+" "+sub] = true
		usage := help(prog, sub, "-h")
		if strings.Contains(usage, "unknown command") {
			t.Errorf("README.md names %q, which %s does not have", prog+" "+sub, prog)
			continue
		}
		if prog == "mfinit" {
			usage = help(prog, "--help")
		}
		if len(f) > 2 && regexp.MustCompile(`^[a-z]+(\|[a-z]+)+$`).MatchString(f[2]) {
			// "meter read|calibrate --driver": the flags are the first mode's
			usage += help(prog, sub, strings.Split(f[2], "|")[0], "-h")
		}
		for _, m := range flagRE.FindAllStringSubmatch(strings.Join(f[2:], " "), -1) {
			if !strings.Contains(usage, "-"+m[2]) {
				t.Errorf("README.md shows %s %s --%s, which `%s %s -h` does not list", prog, sub, m[2], prog, sub)
			}
		}
	}
	subRE := regexp.MustCompile(`(?m)^  ([a-z][a-z0-9-]*)\s`)
	for _, prog := range []string{"mfbuild", "mforch"} {
		for _, m := range subRE.FindAllStringSubmatch(help(prog, "--help"), -1) {
			if !listed[prog+" "+m[1]] {
				t.Errorf("%s %s is missing from README.md's command list", prog, m[1])
			}
		}
	}
	for _, sub := range []string{"invoke", "functions"} {
		if !listed["mfinit "+sub] {
			t.Errorf("mfinit %s is missing from README.md's command list", sub)
		}
	}
}

var linkRE = regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)
var docRE = regexp.MustCompile("`?((?:docs|configs|scripts|examples|patches)/[A-Za-z0-9_./<>*-]*[A-Za-z0-9_>*])`?")

// TestDocLinksExist fails when README.md or a page of docs/ links to, or
// names, a file of the repository that does not exist.
func TestDocLinksExist(t *testing.T) {
	root := strings.TrimSpace(run(t, "", "go", "list", "-m", "-f", "{{.Dir}}"))
	pages, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	pages = append(pages, filepath.Join(root, "README.md"))
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, page := range pages {
		rel, _ := filepath.Rel(root, page)
		if rel != "README.md" && !strings.Contains(string(readme), "]("+rel+")") {
			t.Errorf("README.md does not link %s: add it to the list of docs", rel)
		}
		raw, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range linkRE.FindAllStringSubmatch(string(raw), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(page), target)); err != nil {
				t.Errorf("%s links to %s, which does not exist", rel, target)
			}
		}
		for _, m := range docRE.FindAllStringSubmatch(string(raw), -1) {
			name := strings.TrimSuffix(m[1], ".")
			if strings.ContainsAny(name, "<>*") || strings.Contains(name, "...") {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, name)); err != nil {
				t.Errorf("%s names %s, which does not exist", rel, name)
			}
		}
	}
}
