package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/lab/tco"
)

// The example of examples/tco/README.md end to end: simulate the hour on
// 16 boards, then mforch report --tco with the shipped cost file (its run
// path pointed at the test's folder). The page has the comparison, every
// input's source and the statement that the paper's inputs are not
// reproduced.
func TestReportTCOExample(t *testing.T) {
	dir := t.TempDir()
	run := filepath.Join(dir, "tco-bbb")
	if err := runSimulate(context.Background(), []string{"../../examples/tco/hour.yaml", "--profile", "../../examples/profiles/bbb-srm.yaml",
		"--policy", "reboot-while-queued", "--out", run}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../../examples/tco/bbb-vs-x86.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), "run: ../../runs/tco-bbb", "run: "+run, 1)
	if text == string(b) {
		t.Fatal("the example's run: line changed; update this test")
	}
	costs := filepath.Join(dir, "costs.yaml")
	if err := os.WriteFile(costs, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(dir, "r.html")
	if err := runReport(context.Background(), []string{"--tco", costs, "--out", page}); err != nil {
		t.Fatal(err)
	}
	h, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	f, err := tco.Load(costs)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`<h2 id="tco">`, "not reproduced", `<h2 id="run-0">`, "invocations per joule"}
	for _, in := range f.Inputs() {
		src := in.N.Source
		if in.N.IsAssumption() {
			src = src[len(tco.Assumption):]
		}
		want = append(want, strings.ReplaceAll(src, "'", "&#39;"))
	}
	for _, s := range want {
		if !strings.Contains(string(h), s) {
			t.Errorf("page lacks %q", s)
		}
	}
	if err := runReport(context.Background(), []string{"--tco", filepath.Join(dir, "none.yaml")}); err == nil {
		t.Error("a missing cost file: want an error")
	}
}
