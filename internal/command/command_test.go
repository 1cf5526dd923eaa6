package command

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunReportsOutputTail(t *testing.T) {
	err := Run(context.Background(), "", []string{"MF_X=42"}, "sh", "-c", "echo $MF_X; echo boom >&2; exit 3")
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "42\nboom") {
		t.Fatalf("err = %v", err)
	}
	if err := Run(context.Background(), "", nil, "true"); err != nil {
		t.Fatal(err)
	}
}

func TestLastLines(t *testing.T) {
	if got := LastLines("a\nb\nc\n", 2); got != "b\nc" {
		t.Fatalf("LastLines = %q", got)
	}
}

func TestDownload(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ok" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("payload"))
	}))
	defer srv.Close()
	dst := filepath.Join(t.TempDir(), "sub", "f")
	if err := Download(context.Background(), srv.URL+"/ok", dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "payload" {
		t.Fatalf("got %q", b)
	}
	missing := filepath.Join(t.TempDir(), "m")
	if err := Download(context.Background(), srv.URL+"/gone", missing); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("404: err = %v", err)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatal("a failed download left a file")
	}
}
