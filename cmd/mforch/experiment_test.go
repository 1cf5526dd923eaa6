package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"path/filepath"
	"testing"

	"github.com/microfaas/microfaas/lab/report"
)

func TestParseWithFile(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		file     string
		out      string
		wantFail bool
	}{
		{[]string{"x.yaml"}, "x.yaml", "", false},
		{[]string{"x.yaml", "--out", "d"}, "x.yaml", "d", false},
		{[]string{"--out", "d", "x.yaml"}, "x.yaml", "d", false},
		{[]string{}, "", "", true},
		{[]string{"x.yaml", "y.yaml"}, "", "", true},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		out := fs.String("out", "", "")
		file, err := parseWithFile(fs, tc.args)
		if (err != nil) != tc.wantFail || file != tc.file || *out != tc.out {
			t.Errorf("%v: file %q out %q err %v", tc.args, file, *out, err)
		}
	}
}

func TestReportNeedsRunFolders(t *testing.T) {
	if err := runReport(context.Background(), []string{"--out", filepath.Join(t.TempDir(), "r.html")}); err == nil {
		t.Error("no run folder: want an error")
	}
	err := runReport(context.Background(), []string{t.TempDir(), "--out", filepath.Join(t.TempDir(), "r.html")})
	if !errors.Is(err, report.ErrNotRun) {
		t.Errorf("empty folder: %v, want ErrNotRun", err)
	}
}
