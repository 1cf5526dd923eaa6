// Package testsvc starts real Redis, PostgreSQL, S3 (versitygw) and Kafka
// (franz-go's kfake) servers on loopback for the functions' tests and for
// scripts/services/start.sh.
//
// Each Start* function starts one server in its own directory on a free
// port and returns its settings in the shape functions.Env.Services takes.
// The test helpers Redis, Postgres, S3 and Kafka do the same for a test and
// stop the server when it ends. A server whose program is not installed
// makes the test skip, saying what to install; with CI=true or
// MF_REQUIRE_SERVICES=1 in the environment it makes the test fail instead.
package testsvc

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/twmb/franz-go/pkg/kfake"
)

// VersitygwModule is the versitygw command scripts/services/install.sh
// installs with go install.
const VersitygwModule = "github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// MissingError says that a server's program is not installed, and how to
// install it.
type MissingError struct {
	Program string
	Install string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s not found: %s", e.Program, e.Install)
}

// Server is one running server.
type Server struct {
	// Name is "redis", "postgres", "s3" or "kafka".
	Name string
	// Settings are the service's settings for functions.Env.Services.
	Settings map[string]string
	// Log is the server's log file, if it writes one.
	Log  string
	stop func() error
}

// Stop stops the server and removes its files.
func (s *Server) Stop() error {
	if s == nil || s.stop == nil {
		return nil
	}
	err := s.stop()
	s.stop = nil
	return err
}

// required reports whether a missing server fails tests instead of
// skipping them.
func required() bool {
	return os.Getenv("CI") == "true" || os.Getenv("MF_REQUIRE_SERVICES") == "1"
}

// helper runs start for a test: skip or fail on a missing program, fail on
// any other error, stop the server when the test ends.
func helper(t testing.TB, start func(ctx context.Context) (*Server, error)) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := start(ctx)
	var missing *MissingError
	if errors.As(err, &missing) {
		if required() {
			t.Fatalf("%v (required because CI=true or MF_REQUIRE_SERVICES=1)", err)
		}
		t.Skipf("%v (set MF_REQUIRE_SERVICES=1 to make this a failure)", err)
	}
	if err != nil {
		t.Fatalf("starting test server: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stopping %s: %v", s.Name, err)
		}
	})
	return s.Settings
}

// Redis starts a redis-server with a password for the test.
func Redis(t testing.TB) map[string]string { t.Helper(); return helper(t, StartRedis) }

// Postgres starts a PostgreSQL server with password authentication for the
// test. Its database "postgres" exists; bostonautosales does not until
// functions.SeedPostgres creates it.
func Postgres(t testing.TB) map[string]string { t.Helper(); return helper(t, StartPostgres) }

// S3 starts versitygw over a temporary directory, with an empty bucket.
func S3(t testing.TB) map[string]string { t.Helper(); return helper(t, StartS3) }

// Kafka starts an in-process Kafka-protocol cluster (kfake) of one broker
// that creates topics on first use.
func Kafka(t testing.TB) map[string]string { t.Helper(); return helper(t, StartKafka) }

// ------------------------------------------------------------------ common

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomSecret() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// lookPath finds a program in PATH or in the given extra places.
func lookPath(name string, extra ...string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, p := range extra {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// process is a started server program.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set when done is closed
}

// startProcess starts a server program in the background. It dies with the
// process that started it (SIGKILL on parent death), so a crashed test
// leaves no server behind.
func startProcess(cmd *exec.Cmd, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// terminate sends sig, waits up to grace, then kills.
func (p *process) terminate(sig os.Signal, grace time.Duration) error {
	if p.exited() {
		return nil
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s did not stop within %s of %v; killed", filepath.Base(p.cmd.Path), grace, sig)
}

// waitReady calls probe until it succeeds, the process exits or ctx ends.
func waitReady(ctx context.Context, p *process, logPath string, probe func(ctx context.Context) error) error {
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("%s exited (%v) before it was ready; its log %s ends with:\n%s",
				filepath.Base(p.cmd.Path), p.err, logPath, tail(logPath, 20))
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = probe(pctx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last probe: %v); its log %s ends with:\n%s",
				filepath.Base(p.cmd.Path), ctx.Err(), last, logPath, tail(logPath, 20))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// -------------------------------------------------------------------- redis

// StartRedis starts redis-server on a free loopback port with a random
// password, no persistence, in a new temporary directory.
func StartRedis(ctx context.Context) (*Server, error) {
	bin, ok := lookPath("redis-server", "/usr/bin/redis-server", "/usr/sbin/redis-server")
	if !ok {
		return nil, &MissingError{Program: "redis-server", Install: "install the Debian package redis-server (scripts/services/install.sh does)"}
	}
	dir, err := os.MkdirTemp("", "mf-redis-")
	if err != nil {
		return nil, err
	}
	password := randomSecret()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		logPath := filepath.Join(dir, "redis.log")
		cmd := exec.Command(bin,
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--requirepass", password,
			"--dir", dir, "--save", "", "--appendonly", "no",
			"--daemonize", "no", "--protected-mode", "yes")
		p, err := startProcess(cmd, logPath)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err = waitReady(ctx, p, logPath, func(ctx context.Context) error { return redisPing(ctx, addr, password) })
		if err != nil {
			p.terminate(syscall.SIGKILL, time.Second)
			lastErr = err
			continue // most likely the port was taken meanwhile
		}
		return &Server{
			Name:     "redis",
			Settings: map[string]string{"addr": addr, "password": password, "db": "0"},
			Log:      logPath,
			stop: func() error {
				err := p.terminate(syscall.SIGTERM, 5*time.Second)
				os.RemoveAll(dir)
				return err
			},
		}, nil
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("starting redis-server: %w", lastErr)
}

// redisPing authenticates and sends PING.
func redisPing(ctx context.Context, addr, password string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	fmt.Fprintf(c, "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n", len(password), password)
	r := bufio.NewReader(c)
	for _, want := range []string{"+OK", "+PONG"} {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.TrimSpace(line) != want {
			return fmt.Errorf("redis answered %q, want %q", strings.TrimSpace(line), want)
		}
	}
	return nil
}

// ----------------------------------------------------------------- postgres

// postgresBinDir finds the newest /usr/lib/postgresql/N/bin holding initdb
// and postgres, or MF_PG_BINDIR.
func postgresBinDir() (string, bool) {
	if d := os.Getenv("MF_PG_BINDIR"); d != "" {
		return d, true
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[j]))))
		return vi > vj
	})
	for _, m := range matches {
		dir := filepath.Dir(m)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, true
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), true
	}
	return "", false
}

// runAs returns the credential to run PostgreSQL with: none when not root;
// as root the "postgres" user (the Debian package creates it), else
// "nobody", because PostgreSQL refuses to run as root.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("running as root, and neither user postgres nor nobody exists to run PostgreSQL as")
}

// StartPostgres runs initdb in a new temporary directory and starts
// postgres on a free loopback port, with SCRAM password authentication for
// user postgres, fsync off. As root it runs as user postgres (or nobody).
func StartPostgres(ctx context.Context) (*Server, error) {
	binDir, ok := postgresBinDir()
	if !ok {
		return nil, &MissingError{Program: "PostgreSQL (initdb, postgres)", Install: "install the Debian package postgresql (scripts/services/install.sh does), or set MF_PG_BINDIR"}
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mf-pg-")
	if err != nil {
		return nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	password := randomSecret()
	pwFile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		cleanup()
		return nil, err
	}
	if cred != nil {
		for _, p := range []string{dir, pwFile} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				cleanup()
				return nil, fmt.Errorf("handing %s to uid %d: %w", p, cred.Uid, err)
			}
		}
	}
	dataDir := filepath.Join(dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"),
		"-D", dataDir, "-U", "postgres", "--auth=scram-sha-256", "--pwfile="+pwFile,
		"-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		cleanup()
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			cleanup()
			return nil, err
		}
		logPath := filepath.Join(dir, "postgres.log")
		cmd := exec.Command(filepath.Join(binDir, "postgres"),
			"-D", dataDir, "-p", strconv.Itoa(port), "-k", dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
			"-c", "synchronous_commit=off", "-c", "full_page_writes=off")
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		p, err := startProcess(cmd, logPath)
		if err != nil {
			cleanup()
			return nil, err
		}
		if cred != nil {
			os.Chown(logPath, int(cred.Uid), int(cred.Gid))
		}
		settings := map[string]string{
			"host": "127.0.0.1", "port": strconv.Itoa(port),
			"user": "postgres", "password": password,
			"dbname": "bostonautosales", "sslmode": "disable",
		}
		dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=%s dbname=postgres sslmode=disable", port, password)
		err = waitReady(ctx, p, logPath, func(ctx context.Context) error {
			c, err := pgconn.Connect(ctx, dsn)
			if err != nil {
				return err
			}
			return c.Close(ctx)
		})
		if err != nil {
			p.terminate(syscall.SIGQUIT, 5*time.Second)
			lastErr = err
			continue
		}
		return &Server{
			Name:     "postgres",
			Settings: settings,
			Log:      logPath,
			stop: func() error {
				// SIGINT is PostgreSQL's fast shutdown.
				err := p.terminate(syscall.SIGINT, 15*time.Second)
				cleanup()
				return err
			},
		}, nil
	}
	cleanup()
	return nil, fmt.Errorf("starting postgres: %w", lastErr)
}

// ------------------------------------------------------------------------ s3

// versitygwPath finds the versitygw program: MF_VERSITYGW, PATH, or where
// go install puts it.
func versitygwPath() (string, bool) {
	if p := os.Getenv("MF_VERSITYGW"); p != "" {
		return p, true
	}
	var extra []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		extra = append(extra, filepath.Join(gobin, "versitygw"))
	}
	if gopath := os.Getenv("GOPATH"); gopath != "" {
		extra = append(extra, filepath.Join(gopath, "bin", "versitygw"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		extra = append(extra, filepath.Join(home, "go", "bin", "versitygw"))
	}
	extra = append(extra, "/usr/local/bin/versitygw")
	return lookPath("versitygw", extra...)
}

// S3Bucket is the bucket StartS3 creates.
const S3Bucket = "microfaas"

// StartS3 starts versitygw's posix backend over a new temporary directory
// on a free loopback port, and creates the bucket S3Bucket.
func StartS3(ctx context.Context) (*Server, error) {
	bin, ok := versitygwPath()
	if !ok {
		return nil, &MissingError{Program: "versitygw", Install: "run scripts/services/install.sh, which runs: go install " + VersitygwModule + " (or set MF_VERSITYGW to the program)"}
	}
	dir, err := os.MkdirTemp("", "mf-s3-")
	if err != nil {
		return nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		cleanup()
		return nil, err
	}
	access, secret := "mf"+randomSecret()[:10], randomSecret()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			cleanup()
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		logPath := filepath.Join(dir, "versitygw.log")
		cmd := exec.Command(bin, "--access", access, "--secret", secret,
			"--port", addr, "--region", "us-east-1", "--quiet", "posix", root)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir} // no ROOT_ACCESS_KEY etc. from the caller
		p, err := startProcess(cmd, logPath)
		if err != nil {
			cleanup()
			return nil, err
		}
		settings := map[string]string{
			"endpoint": "http://" + addr, "access_key": access, "secret_key": secret,
			"bucket": S3Bucket, "region": "us-east-1", "secure": "false",
			// Not a client setting: where versitygw keeps the objects
			// (<data_dir>/<bucket>/<key>), for tests that check them on disk.
			"data_dir": root,
		}
		client, err := minio.New(addr, &minio.Options{
			Creds: credentials.NewStaticV4(access, secret, ""), Region: "us-east-1",
			BucketLookup: minio.BucketLookupPath, MaxRetries: 1,
		})
		if err != nil {
			p.terminate(syscall.SIGKILL, time.Second)
			cleanup()
			return nil, err
		}
		err = waitReady(ctx, p, logPath, func(ctx context.Context) error {
			_, err := client.ListBuckets(ctx)
			return err
		})
		if err == nil {
			err = client.MakeBucket(ctx, S3Bucket, minio.MakeBucketOptions{Region: "us-east-1"})
		}
		if err != nil {
			p.terminate(syscall.SIGKILL, time.Second)
			lastErr = err
			continue
		}
		return &Server{
			Name:     "s3",
			Settings: settings,
			Log:      logPath,
			stop: func() error {
				err := p.terminate(syscall.SIGTERM, 5*time.Second)
				cleanup()
				return err
			},
		}, nil
	}
	cleanup()
	return nil, fmt.Errorf("starting versitygw: %w", lastErr)
}

// --------------------------------------------------------------------- kafka

// StartKafka starts an in-process kfake cluster of one broker on a free
// loopback port; topics are created on first use, with one partition.
func StartKafka(ctx context.Context) (*Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(1))
	if err != nil {
		return nil, fmt.Errorf("starting kfake: %w", err)
	}
	return &Server{
		Name:     "kafka",
		Settings: map[string]string{"brokers": strings.Join(c.ListenAddrs(), ",")},
		stop: func() error {
			c.Close()
			return nil
		},
	}, nil
}

// Start starts the named services ("redis", "postgres", "s3", "kafka"),
// stopping those already started if one fails.
func Start(ctx context.Context, names ...string) ([]*Server, error) {
	starters := map[string]func(context.Context) (*Server, error){
		"redis": StartRedis, "postgres": StartPostgres, "s3": StartS3, "kafka": StartKafka,
	}
	var started []*Server
	for _, n := range names {
		start, ok := starters[n]
		if !ok {
			StopAll(started, io.Discard)
			return nil, fmt.Errorf("unknown service %q (known: redis, postgres, s3, kafka)", n)
		}
		s, err := start(ctx)
		if err != nil {
			StopAll(started, io.Discard)
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		started = append(started, s)
	}
	return started, nil
}

// StopAll stops servers in reverse order, reporting errors to w.
func StopAll(servers []*Server, w io.Writer) {
	for i := len(servers) - 1; i >= 0; i-- {
		if err := servers[i].Stop(); err != nil {
			fmt.Fprintf(w, "stopping %s: %v\n", servers[i].Name, err)
		}
	}
}
