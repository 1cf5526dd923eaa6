package rig

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/orchestrator"
)

// TestRunFolderClusterRedacted: issue 18, attack 8. The experiment's copy
// of the cluster file keeps no secret (the inline secret, service
// passwords and keys, a DSN's password), says so, and still loads.
func TestRunFolderClusterRedacted(t *testing.T) {
	const secret = "5ec7e75ec7e75ec7e75ec7e75ec7e75e"
	src := filepath.Join(t.TempDir(), "cluster.yaml")
	in := `# my cluster
network: {subnet: 10.0.2.0/24, gateway: 10.0.2.2, orchestrator: 10.0.2.2}
secret: ` + secret + `
services:
  redis: {addr: "10.0.2.2:6379", password: "redis-pw-1"}
  postgres: {dsn: "postgres://app:pg-pw-2@10.0.2.2:5432/db"}
  pg2: {dsn: "host=10.0.2.2 password='pg pw 3' user=app"}
  s3: {endpoint: "http://10.0.2.2:9000", access_key: "AK-4", secret_key: "SK-5", bucket: b}
  api: {token: "tok-6", Auth_Token: "tok-7"}
workers:
  - {id: vm0, kind: vm, ip: 10.0.2.15}
`
	if err := os.WriteFile(src, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := writeRedactedCluster(dst, src); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	for _, leak := range []string{secret, "redis-pw-1", "pg-pw-2", "pg pw 3", "AK-4", "SK-5", "tok-6", "tok-7"} {
		if strings.Contains(string(b), leak) {
			t.Errorf("the copy holds %q:\n%s", leak, b)
		}
	}
	for _, kept := range []string{"10.0.2.2:6379", "app:REDACTED@10.0.2.2:5432", "bucket: b", "vm0", "redacted", "# my cluster"} {
		if !strings.Contains(string(b), kept) {
			t.Errorf("the copy lost %q:\n%s", kept, b)
		}
	}
	// It still parses as a cluster file (the secret is just not one).
	if _, err := cluster.Parse(b, filepath.Dir(dst)); err == nil || !strings.Contains(err.Error(), "secret") {
		t.Errorf("the redacted copy: %v, want only the secret refused", err)
	}
}

// TestResultsFilePrivate: results.csv (function errors, which may quote a
// function's output) is 0600, made so or tightened.
func TestResultsFilePrivate(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, existing := range []bool{false, true} {
		path := filepath.Join(dir, "results.csv")
		os.Remove(path)
		if existing {
			os.WriteFile(path, nil, 0o644)
		}
		f, _, err := openResults(path, orchestrator.CSVHeader, time.Now(), log)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("results file (existing %v): mode %v, %v; want 0600", existing, fi.Mode().Perm(), err)
		}
	}
}
