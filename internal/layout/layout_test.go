package layout

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// graphs lists the module's packages with go list: each package's
// transitive dependencies and its tests' direct imports, module-relative.
func graphs(t *testing.T) (deps, testImports map[string][]string) {
	t.Helper()
	mod, err := exec.Command("go", "list", "-m").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	prefix := strings.TrimSpace(string(mod)) + "/"
	out, err := exec.Command("go", "list", "-f",
		"{{.ImportPath}}\t{{join .Deps \" \"}}\t{{join .TestImports \" \"}} {{join .XTestImports \" \"}}", prefix+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	ours := func(list string) []string {
		var r []string
		for _, p := range strings.Fields(list) {
			if rel, ok := strings.CutPrefix(p, prefix); ok {
				r = append(r, rel)
			}
		}
		return r
	}
	deps, testImports = map[string][]string{}, map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 3 {
			t.Fatalf("go list line %q", sc.Text())
		}
		pkg := strings.TrimPrefix(f[0], prefix)
		deps[pkg], testImports[pkg] = ours(f[1]), ours(f[2])
	}
	return deps, testImports
}

// TestImportDirection is the check: it fails, naming the edge and the rule,
// when an import breaks the documented direction.
func TestImportDirection(t *testing.T) {
	deps, tests := graphs(t)
	for _, want := range []string{"builder", "kernel", "initramfs", "runtime", "orchestrator", "cluster", "e2e", "bootparams", "target", "protocol"} {
		if _, ok := deps[want]; !ok {
			t.Errorf("package %s not found: keep Rules in step with the tree", want)
		}
	}
	for _, v := range Check(deps, Rules) {
		t.Error(v)
	}
	for _, v := range Check(tests, TestRules) {
		t.Error("test: " + v)
	}
}

// The checker itself catches each kind of forbidden edge.
func TestCheck(t *testing.T) {
	graph := map[string][]string{
		"builder/image":       {"orchestrator/power"}, // sub-package, transitive
		"runtime":             {"protocol", "bootparams"},
		"orchestrator":        {"cluster", "orchestrator/power"},
		"kernel":              {"internal/cache"},
		"orchestrator/openfa": {"builder"},
	}
	got := Check(graph, Rules)
	if len(got) != 2 || !strings.HasPrefix(got[0], "builder/image depends on orchestrator/power") ||
		!strings.HasPrefix(got[1], "orchestrator/openfa depends on builder") {
		t.Fatalf("Check = %q", got)
	}
	if !Under("builder/image", "builder") || !Under("builder", "builder") || Under("builderx", "builder") {
		t.Fatal("Under")
	}
}
