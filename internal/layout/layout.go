// Package layout holds the check that the imports follow the direction the
// README documents (see Rules): configs/ and patches/ feed kernel/ and
// initramfs/, builder/ turns them into images, the orchestrator boots those
// images, and the runtime on the worker talks to the orchestrator only
// through protocol/ and bootparams/. `go test ./internal/layout/` (part of
// `go test ./...`) fails when an import breaks it.
package layout

import (
	"fmt"
	"sort"
	"strings"
)

// Rule forbids packages under From to depend on packages under any of Deny.
// Paths are relative to the module; "builder" means builder and builder/...
type Rule struct {
	From string
	Deny []string
	Why  string
}

// Rules are the documented directions. Non-test imports are checked with
// their transitive dependencies; test imports (TestRules) directly.
var Rules = []Rule{
	{"kernel", []string{"builder", "initramfs", "runtime", "orchestrator", "cluster", "bootparams", "e2e", "cmd"},
		"the kernel build (configs/kernel, patches) knows nothing of what runs on the kernel"},
	{"initramfs", []string{"builder", "kernel", "runtime", "orchestrator", "cluster", "bootparams", "e2e", "cmd"},
		"the cpio writer is a building block of builder"},
	{"builder", []string{"orchestrator", "e2e", "cmd"},
		"builder makes images; the orchestrator boots them (the smoke test is in e2e)"},
	{"cluster", []string{"builder", "kernel", "initramfs", "runtime", "orchestrator", "e2e", "cmd"},
		"the cluster file is read by builder and orchestrator alike"},
	{"runtime", []string{"builder", "kernel", "initramfs", "orchestrator", "cluster", "e2e", "cmd"},
		"the worker knows the orchestrator only through protocol and bootparams"},
	{"runtime", []string{"bundle/oci"},
		"the worker unpacks bundles (bundle); pulling and flattening images (bundle/oci) is the orchestrator's and mfbuild's"},
	{"bundle", []string{"builder", "kernel", "initramfs", "runtime", "orchestrator", "cluster", "lab", "protocol", "bootparams", "e2e", "cmd"},
		"the bundle format (and bundle/oci, which makes bundles) is a leaf that builder, orchestrator and runtime share"},
	{"orchestrator", []string{"builder", "kernel", "initramfs", "lab", "e2e", "cmd"},
		"the orchestrator boots built images; it does not build them, and the lab sits above it, never inside"},
	{"lab", []string{"builder", "kernel", "initramfs", "e2e", "cmd"},
		"the measurement lab drives the orchestrator and reads the function catalogue (runtime/functions); it does not build images"},
	{"protocol", []string{"builder", "kernel", "initramfs", "runtime", "orchestrator", "cluster", "bootparams", "target", "e2e", "cmd"},
		"the wire format is a leaf"},
	{"bootparams", []string{"builder", "kernel", "initramfs", "runtime", "orchestrator", "cluster", "protocol", "target", "e2e", "cmd"},
		"the command-line format is a leaf"},
	{"target", []string{"builder", "kernel", "initramfs", "runtime", "orchestrator", "cluster", "protocol", "bootparams", "e2e", "cmd"},
		"the architecture table is a leaf"},
	{"e2e", []string{"cmd"}, "the end-to-end checks are called by mfbuild qemu, not the other way"},
	{"internal", []string{"builder", "kernel", "initramfs", "orchestrator", "lab", "cluster", "e2e", "cmd"},
		"internal helpers serve every layer"},
}

// TestRules apply to the direct imports of a package's tests: tests of the
// build side and of the worker never start an orchestrator.
var TestRules = []Rule{
	{"builder", []string{"orchestrator", "e2e"}, "tests that boot images under the orchestrator live in e2e"},
	{"kernel", []string{"orchestrator", "e2e"}, "tests that boot images under the orchestrator live in e2e"},
	{"initramfs", []string{"orchestrator", "e2e"}, "tests that boot images under the orchestrator live in e2e"},
	{"runtime", []string{"orchestrator", "builder", "e2e"}, "the worker is tested on its own or through e2e"},
}

// Under reports whether the module-relative path p is dir or inside it.
func Under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// Check returns one line per forbidden edge of graph (package -> the
// module-relative packages it depends on).
func Check(graph map[string][]string, rules []Rule) []string {
	var out []string
	for pkg, deps := range graph {
		for _, r := range rules {
			if !Under(pkg, r.From) {
				continue
			}
			for _, d := range deps {
				for _, deny := range r.Deny {
					if Under(d, deny) && !Under(d, r.From) {
						out = append(out, fmt.Sprintf("%s depends on %s: %s", pkg, d, r.Why))
					}
				}
			}
		}
	}
	sort.Strings(out)
	return out
}
