package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/lab/tco"
)

// The example of examples/tco/README.md end to end: mforch report --tco
// with the shipped cost file sizes the boards by simulation and compares
// them with the VM host model. The page has the comparison, every input's
// source and the statement that the paper's inputs are not reproduced.
func TestReportTCOExample(t *testing.T) {
	dir := t.TempDir()
	costs := "../../examples/tco/bbb-vs-x86.yaml"
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
	want := []string{`<h2 id="tco">`, "not reproduced", "SIMULATED run", "bisection", "invocations per joule"}
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
