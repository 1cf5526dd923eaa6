package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/workerlog"
)

// fakeBoots is a worker whose boots grow as the test says.
type fakeBoots struct {
	text  map[int]string
	asked []orchestrator.LogQuery
	grow  func(n int) // called before each answer
}

func (f *fakeBoots) fetch(_ context.Context, q orchestrator.LogQuery) (workerlog.Chunk, error) {
	f.asked = append(f.asked, q)
	if f.grow != nil {
		f.grow(len(f.asked))
	}
	latest := 0
	var boots []int
	for b := 1; f.text[b] != "" || b <= len(f.text); b++ {
		if _, ok := f.text[b]; !ok {
			break
		}
		boots, latest = append(boots, b), b
	}
	boot := q.Boot
	if q.Invocation == "inv1" {
		boot = 1
	}
	if boot == 0 {
		boot = latest
	}
	t, ok := f.text[boot]
	if !ok {
		return workerlog.Chunk{}, errors.New("no such boot")
	}
	off := min(q.Offset, int64(len(t)))
	return workerlog.Chunk{Worker: "vm0", Boot: boot, Boots: boots, Offset: off, Next: int64(len(t)), Latest: boot == latest, Text: t[off:]}, nil
}

func TestShowLogs(t *testing.T) {
	t.Run("once", func(t *testing.T) {
		f := &fakeBoots{text: map[int]string{1: "kernel | old\n", 2: "kernel | [    0.000000] Linux version\n"}}
		var out, errOut bytes.Buffer
		if err := showLogs(context.Background(), f.fetch, orchestrator.LogQuery{Worker: "vm0"}, false, time.Millisecond, &out, &errOut); err != nil {
			t.Fatal(err)
		}
		if out.String() != f.text[2] || !strings.Contains(errOut.String(), "worker vm0, boot 2") {
			t.Errorf("out %q, header %q", out.String(), errOut.String())
		}
	})
	t.Run("invocation's boot", func(t *testing.T) {
		f := &fakeBoots{text: map[int]string{1: "mfinit | ran inv1\n", 2: "kernel | later\n"}}
		var out, errOut bytes.Buffer
		showLogs(context.Background(), f.fetch, orchestrator.LogQuery{Invocation: "inv1"}, true, time.Millisecond, &out, &errOut)
		if out.String() != f.text[1] {
			t.Errorf("out %q: want boot 1 only, and --follow of a past boot ends", out.String())
		}
	})
	t.Run("follow goes on to the next boot", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f := &fakeBoots{text: map[int]string{1: "console | a\n"}}
		f.grow = func(n int) {
			switch n {
			case 2:
				f.text[1] += "kernel | b\n"
			case 3:
				f.text[2] = "console | next boot\n"
			case 6:
				cancel()
			}
		}
		var out, errOut bytes.Buffer
		if err := showLogs(ctx, f.fetch, orchestrator.LogQuery{Worker: "vm0"}, true, time.Millisecond, &out, &errOut); err != nil {
			t.Fatal(err)
		}
		if want := "console | a\nkernel | b\nconsole | next boot\n"; out.String() != want {
			t.Errorf("followed %q, want %q", out.String(), want)
		}
		if !strings.Contains(errOut.String(), "boot 2") {
			t.Errorf("no header for the new boot: %q", errOut.String())
		}
	})
}

func TestLogsCommand(t *testing.T) {
	if err := runLogs(context.Background(), []string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
	if err := runLogs(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "name a worker") {
		t.Errorf("no worker: %v", err)
	}
	if err := runLogs(context.Background(), []string{"vm0", "--boot", "2", "--invocation", "x"}); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("both: %v", err)
	}
	// Against an API: the query it sends, and an error that says what to fix.
	var gotPath string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath = r.URL.String()
		if r.URL.Query().Get("boot") == "9" {
			http.Error(w, "no logs: worker vm0 has no boot 9 (kept: 1 to 2)", http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(workerlog.Chunk{Worker: "vm0", Boot: 2, Boots: []int{1, 2}, Latest: true, Text: "kernel | x\n"})
	}))
	defer srv.Close()
	if err := runLogs(context.Background(), []string{"vm0", "--addr", srv.URL, "--auth", t.TempDir(), "--boot", "2"}); err != nil {
		t.Errorf("logs: %v", err)
	}
	if gotPath != "/workers/vm0/logs?boot=2" {
		t.Errorf("asked %s", gotPath)
	}
	err := runLogs(context.Background(), []string{"vm0", "--addr", srv.URL, "--auth", t.TempDir(), "--boot", "9"})
	if err == nil || !strings.Contains(err.Error(), "kept: 1 to 2") {
		t.Errorf("missing boot: %v", err)
	}
	runLogs(context.Background(), []string{"--invocation", "abc", "--addr", srv.URL, "--auth", t.TempDir()})
	if gotPath != "/invocations/abc/logs" {
		t.Errorf("asked %s", gotPath)
	}
}
