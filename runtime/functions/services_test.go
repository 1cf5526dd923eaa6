package functions_test

// Tests of the service functions against real servers on loopback, started
// by internal/testsvc: redis-server, PostgreSQL, versitygw (S3) and kfake
// (Kafka protocol). A missing server program skips its test (fails it under
// CI=true or MF_REQUIRE_SERVICES=1); scripts/services/install.sh installs
// them all.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/microfaas/microfaas/internal/testsvc"
	"github.com/microfaas/microfaas/runtime/functions"
)

// run calls a function by name with a 30 s deadline.
func run(t *testing.T, env functions.Env, name, args string) (map[string]any, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return runCtx(ctx, t, env, name, args)
}

func runCtx(ctx context.Context, t *testing.T, env functions.Env, name, args string) (map[string]any, error) {
	t.Helper()
	fn, err := functions.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	res, err := fn(ctx, env, json.RawMessage(args))
	if err != nil {
		return nil, err
	}
	// Results travel as JSON: look at them as the orchestrator will.
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatalf("%s result %v does not encode: %v", name, res, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s result %s is not an object: %v", name, b, err)
	}
	return m, nil
}

func mustRun(t *testing.T, env functions.Env, name, args string) map[string]any {
	t.Helper()
	m, err := run(t, env, name, args)
	if err != nil {
		t.Fatalf("%s(%s): %v", name, args, err)
	}
	return m
}

func wantErr(t *testing.T, env functions.Env, name, args, fragment string) error {
	t.Helper()
	_, err := run(t, env, name, args)
	if err == nil || !strings.Contains(err.Error(), fragment) {
		t.Fatalf("%s(%s) error = %v, want one containing %q", name, args, err, fragment)
	}
	return err
}

func envWith(service string, settings map[string]string) functions.Env {
	return functions.Env{Services: map[string]map[string]string{service: settings}}
}

// ------------------------------------------------------------------- redis

// redisCLI runs redis-cli against the test server: a client independent of
// the functions' own.
func redisCLI(t *testing.T, s map[string]string, args ...string) string {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skip("redis-cli not installed (Debian package redis-tools)")
	}
	host, port, _ := net.SplitHostPort(s["addr"])
	cmd := exec.Command(cli, append([]string{"-h", host, "-p", port, "--no-auth-warning", "-a", s["password"], "-n", valueOr(s["db"], "0")}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func valueOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func TestRedis(t *testing.T) {
	s := testsvc.Redis(t)
	env := envWith("redis", s)

	got := mustRun(t, env, "redis_insert", `{"id": "1234567", "balance": "500"}`)
	if got["id"] != "1234567" || got["balance"] != 500.0 {
		t.Errorf("redis_insert = %v", got)
	}
	if v := redisCLI(t, s, "GET", "1234567"); v != "500" {
		t.Errorf("after redis_insert, redis-cli GET = %q", v)
	}
	got = mustRun(t, env, "redis_modify", `{"id": "1234567", "spend": "120"}`)
	if got["balance"] != 380.0 {
		t.Errorf("redis_modify = %v, want balance 380", got)
	}
	if v := redisCLI(t, s, "GET", "1234567"); v != "380" {
		t.Errorf("after redis_modify, redis-cli GET = %q", v)
	}
	// A new account starts at 0, as INCRBY does.
	got = mustRun(t, env, "redis_modify", `{"id": "Jenny", "spend": 7}`)
	if got["balance"] != -7.0 {
		t.Errorf("redis_modify on a new key = %v", got)
	}
	// Numeric ids, keys with spaces and binary-unsafe characters.
	mustRun(t, env, "redis_insert", `{"id": 42, "balance": 1}`)
	got = mustRun(t, env, "redis_insert", `{"id": "a b\r\nc", "balance": -3}`)
	if got["balance"] != -3.0 {
		t.Errorf("odd key: %v", got)
	}

	// A value that is not a number: the server's error comes through.
	redisCLI(t, s, "SET", "word", "hello")
	err := wantErr(t, env, "redis_modify", `{"id": "word", "spend": 1}`, "not an integer")
	if errors.Is(err, functions.ErrUnreachable) || errors.Is(err, functions.ErrBadArgs) {
		t.Errorf("server error classified as %v", err)
	}

	// Another database number.
	s1 := maps.Clone(s)
	s1["db"] = "1"
	mustRun(t, envWith("redis", s1), "redis_insert", `{"id": "dbkey", "balance": 9}`)
	if v := redisCLI(t, s1, "GET", "dbkey"); v != "9" {
		t.Errorf("db 1: redis-cli GET = %q", v)
	}
	if v := redisCLI(t, s, "EXISTS", "dbkey"); v != "0" {
		t.Errorf("db 0 has the key written to db 1 (EXISTS = %q)", v)
	}

	// Wrong password.
	bad := maps.Clone(s)
	bad["password"] = "wrong"
	err = wantErr(t, envWith("redis", bad), "redis_insert", `{"id": "x", "balance": 1}`, "AUTH")
	if errors.Is(err, functions.ErrUnreachable) {
		t.Errorf("wrong password reported as unreachable: %v", err)
	}
	// No password at all when one is required.
	delete(bad, "password")
	wantErr(t, envWith("redis", bad), "redis_insert", `{"id": "x", "balance": 1}`, "NOAUTH")

	// Bad arguments never reach the server.
	for _, args := range []string{`{"balance": 1}`, `{"id": "x"}`, `{"id": "x", "balance": "lots"}`, `{"id": "", "balance": 1}`, `{"id": [1], "balance": 1}`} {
		if _, err := run(t, env, "redis_insert", args); !errors.Is(err, functions.ErrBadArgs) {
			t.Errorf("redis_insert(%s) = %v, want ErrBadArgs", args, err)
		}
	}
	for _, args := range []string{`{"id": "x"}`, `{"id": "x", "spend": -1}`, `{"spend": 1}`} {
		if _, err := run(t, env, "redis_modify", args); !errors.Is(err, functions.ErrBadArgs) {
			t.Errorf("redis_modify(%s) = %v, want ErrBadArgs", args, err)
		}
	}
}

// ---------------------------------------------------------------- postgres

// pgQuery runs one query with pgconn directly and returns the text rows.
func pgQuery(t *testing.T, dsn, sql string) [][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	res := c.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	if res.Err != nil {
		t.Fatalf("%s: %v", sql, res.Err)
	}
	var rows [][]string
	for _, r := range res.Rows {
		var row []string
		for _, v := range r {
			row = append(row, string(v))
		}
		rows = append(rows, row)
	}
	return rows
}

func TestPostgres(t *testing.T) {
	s := testsvc.Postgres(t)
	dsn, err := functions.PostgresDSN(s)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The database does not exist yet: SeedPostgres creates it.
	if err := functions.SeedPostgres(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	if rows := pgQuery(t, dsn, "SELECT count(*), sum(number_in_stock), min(id), max(id) FROM inventory"); fmt.Sprint(rows) != "[[60 577 1 60]]" {
		t.Fatalf("after SeedPostgres: count, sum, min, max = %v", rows)
	}
	env := envWith("postgres", s)

	inv := mustRun(t, env, "psql_inventory", `{"a": 0}`) // the original's input
	cars := inv["cars"].([]any)
	if len(cars) != 60 || inv["total_in_stock"] != 577.0 {
		t.Fatalf("psql_inventory: %d cars, total %v", len(cars), inv["total_in_stock"])
	}
	summary := inv["summary"].(string)
	if !strings.HasPrefix(summary, "1) Toyota Camry 2019: 12 in stock    2) Toyota Corolla 2020: 18 in stock") ||
		!strings.HasSuffix(summary, "60) Acura MDX 2018: 4 in stock    Total cars in stock: 577") {
		t.Errorf("summary = %.200s ... %s", summary, summary[max(0, len(summary)-80):])
	}
	first := cars[0].(map[string]any)
	if first["id"] != 1.0 || first["make"] != "Toyota" || first["model"] != "Camry" || first["year"] != 2019.0 || first["in_stock"] != 12.0 {
		t.Errorf("first car = %v", first)
	}

	got := mustRun(t, env, "psql_purchase", `{"id": 1}`)
	car := got["car"].(map[string]any)
	if got["success"] != true || car["in_stock"] != 11.0 || car["model"] != "Camry" {
		t.Errorf("psql_purchase = %v", got)
	}
	if rows := pgQuery(t, dsn, "SELECT number_in_stock FROM inventory WHERE id = 1"); rows[0][0] != "11" {
		t.Errorf("stock of car 1 after a purchase: %v", rows)
	}

	wantErr(t, env, "psql_purchase", `{"id": 61}`, "no car with id 61")

	// Sold out: exactly as many concurrent purchases succeed as there are cars.
	pgQuery(t, dsn, "UPDATE inventory SET number_in_stock = 3 WHERE id = 59")
	purchase, err := functions.Lookup("psql_purchase")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, soldOut := 0, 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := purchase(ctx, env, json.RawMessage(`{"id": "59"}`))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case strings.Contains(err.Error(), "car 59 (Volvo XC90 2020) is out of stock"):
				soldOut++
			default:
				t.Errorf("concurrent purchase: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 3 || soldOut != 5 {
		t.Errorf("8 purchases of 3 cars: %d succeeded, %d sold out", ok, soldOut)
	}

	// The dsn form of the settings, and reseeding restores the stock.
	if err := functions.SeedPostgres(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	inv = mustRun(t, envWith("postgres", map[string]string{"dsn": dsn}), "psql_inventory", `{}`)
	if inv["total_in_stock"] != 577.0 {
		t.Errorf("after reseeding: total %v", inv["total_in_stock"])
	}

	// Errors: wrong password, missing table, bad arguments, bad DSN.
	bad := maps.Clone(s)
	bad["password"] = "wrong"
	err = wantErr(t, envWith("postgres", bad), "psql_inventory", `{}`, "password authentication failed")
	if errors.Is(err, functions.ErrUnreachable) {
		t.Errorf("wrong password reported as unreachable: %v", err)
	}
	other := maps.Clone(s)
	other["dbname"] = "postgres"
	wantErr(t, envWith("postgres", other), "psql_inventory", `{}`, `relation "inventory" does not exist`)
	for _, args := range []string{`{}`, `{"id": 0}`, `{"id": "x"}`, `{"id": 1.5}`, `{"id": 99999999999}`} {
		if _, err := run(t, env, "psql_purchase", args); !errors.Is(err, functions.ErrBadArgs) {
			t.Errorf("psql_purchase(%s) = %v, want ErrBadArgs", args, err)
		}
	}
	if err := functions.SeedPostgres(ctx, "host=127.0.0.1 port=notaport"); err == nil {
		t.Error("SeedPostgres accepted a bad DSN")
	}
}

// ---------------------------------------------------------------------- s3

func TestS3(t *testing.T) {
	s := testsvc.S3(t)
	env := envWith("s3", s)
	env.EtcDir = t.TempDir()
	env.DownloadDir = t.TempDir()
	files := map[string][]byte{}
	for i, name := range functions.UploadFiles {
		files[name] = []byte(fmt.Sprintf("# /etc/%s of a test worker\n%s", name, strings.Repeat("x", i*1000)))
		if err := os.WriteFile(filepath.Join(env.EtcDir, name), files[name], 0o644); err != nil {
			t.Fatal(err)
		}
	}

	for _, name := range functions.UploadFiles {
		got := mustRun(t, env, "upload_file", fmt.Sprintf(`{"file": %q}`, name))
		sum := sha256.Sum256(files[name])
		if got["sha256"] != hex.EncodeToString(sum[:]) || got["size"] != float64(len(files[name])) || got["key"] != name {
			t.Errorf("upload_file %s = %v", name, got)
		}
		// versitygw's posix backend keeps the object as a plain file.
		onDisk, err := os.ReadFile(filepath.Join(s["data_dir"], s["bucket"], name))
		if err != nil || !bytes.Equal(onDisk, files[name]) {
			t.Errorf("object %s on disk: %v (%d bytes, want %d)", name, err, len(onDisk), len(files[name]))
		}
	}
	// Round trip: download what was uploaded.
	got := mustRun(t, env, "download_file", `{"file": "passwd"}`)
	if b, err := os.ReadFile(filepath.Join(env.DownloadDir, "passwd")); err != nil || !bytes.Equal(b, files["passwd"]) {
		t.Errorf("downloaded passwd: %v, %q", err, b)
	}
	if got["path"] != filepath.Join(env.DownloadDir, "passwd") {
		t.Errorf("download_file path = %v", got["path"])
	}

	// The sample objects of the generated inputs.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := functions.SeedS3(ctx, s); err != nil {
		t.Fatal(err)
	}
	for _, o := range functions.DownloadSamples {
		got := mustRun(t, env, "download_file", fmt.Sprintf(`{"file": %q}`, o.Name))
		want := functions.SampleObject(o.Name, o.Size)
		sum := sha256.Sum256(want)
		if got["size"] != float64(o.Size) || got["sha256"] != hex.EncodeToString(sum[:]) {
			t.Errorf("download_file %s = %v", o.Name, got)
		}
		b, err := os.ReadFile(filepath.Join(env.DownloadDir, o.Name))
		if err != nil || !bytes.Equal(b, want) {
			t.Errorf("%s on disk differs (%v)", o.Name, err)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(env.DownloadDir, ".download-*")); len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}

	// Errors.
	wantErr(t, env, "download_file", `{"file": "no-such-object.doc"}`, "does not exist")
	if _, err := os.Stat(filepath.Join(env.DownloadDir, "no-such-object.doc")); err == nil {
		t.Error("a missing object left a file behind")
	}
	os.Remove(filepath.Join(env.EtcDir, "shadow"))
	wantErr(t, env, "upload_file", `{"file": "shadow"}`, "no such file")
	noBucket := maps.Clone(s)
	noBucket["bucket"] = "no-such-bucket"
	noBucketEnv := envWith("s3", noBucket)
	noBucketEnv.EtcDir = env.EtcDir
	wantErr(t, noBucketEnv, "upload_file", `{"file": "passwd"}`, "bucket does not exist")
	wantErr(t, noBucketEnv, "download_file", `{"file": "passwd"}`, "does not exist")
	badKey := maps.Clone(s)
	badKey["secret_key"] = "wrong"
	err := wantErr(t, functions.Env{Services: map[string]map[string]string{"s3": badKey}, EtcDir: env.EtcDir}, "upload_file", `{"file": "hosts"}`, "s3 PUT")
	if errors.Is(err, functions.ErrUnreachable) {
		t.Errorf("bad secret reported as unreachable: %v", err)
	}
	for fn, args := range map[string][]string{
		"upload_file":   {`{}`, `{"file": "fstab"}`, `{"file": "../passwd"}`, `{"file": 3}`},
		"download_file": {`{}`, `{"file": "../x"}`, `{"file": ".hidden"}`, `{"file": "a/b"}`, `{"file": ""}`, `{"file": "` + strings.Repeat("a", 256) + `"}`},
	} {
		for _, a := range args {
			if _, err := run(t, env, fn, a); !errors.Is(err, functions.ErrBadArgs) {
				t.Errorf("%s(%s) = %v, want ErrBadArgs", fn, a, err)
			}
		}
	}
}

// ------------------------------------------------------------------- kafka

func TestKafka(t *testing.T) {
	s := testsvc.Kafka(t)
	env := envWith("kafka", s)

	for i, msg := range []string{"first", "second", "third"} {
		got := mustRun(t, env, "upload_kafka", fmt.Sprintf(`{"groupID": 2, "consumerID": "c1", "topic": "SampleTopic", "message": %q}`, msg))
		if got["topic"] != "SampleTopic" || got["offset"] != float64(i) || got["partition"] != 0.0 {
			t.Errorf("upload_kafka %s = %v", msg, got)
		}
	}
	// One at a time: each read commits, so the next continues after it.
	for _, want := range []string{"first", "second"} {
		got := mustRun(t, env, "read_kafka", `{"groupID": 2, "consumerID": "c1"}`)
		if msgs := got["messages"].([]any); len(msgs) != 1 || msgs[0] != want {
			t.Errorf("read_kafka = %v, want [%s]", got, want)
		}
	}
	got := mustRun(t, env, "read_kafka", `{"groupID": 2, "topic": "SampleTopic", "max": 10, "wait_ms": 1000}`)
	if msgs := got["messages"].([]any); len(msgs) != 1 || msgs[0] != "third" {
		t.Errorf("read_kafka max 10 = %v, want [third]", got)
	}
	start := time.Now()
	got = mustRun(t, env, "read_kafka", `{"groupID": 2, "wait_ms": 500}`)
	if msgs := got["messages"].([]any); len(msgs) != 0 {
		t.Errorf("read_kafka after everything was read = %v", got)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("an empty read took %v with wait_ms 500", d)
	}
	// Another group starts from the beginning.
	got = mustRun(t, env, "read_kafka", `{"groupID": "other", "max": 3}`)
	if fmt.Sprint(got["messages"]) != "[first second third]" {
		t.Errorf("new group read %v", got["messages"])
	}
	// A key, and a topic created on first use.
	mustRun(t, env, "upload_kafka", `{"topic": "other.topic-1", "message": "keyed", "key": "k"}`)
	got = mustRun(t, env, "read_kafka", `{"topic": "other.topic-1"}`)
	if fmt.Sprint(got["messages"]) != "[keyed]" {
		t.Errorf("read of other.topic-1 = %v", got)
	}

	for fn, args := range map[string][]string{
		"upload_kafka": {`{"message": "m"}`, `{"topic": "t"}`, `{"topic": "bad topic", "message": "m"}`, `{"topic": "..", "message": "m"}`, `{"topic": "t", "message": 5}`},
		"read_kafka":   {`{"topic": "a/b"}`, `{"max": 0}`, `{"max": 1001}`, `{"wait_ms": 10}`, `{"groupID": {}}`, `{"groupID": ""}`},
	} {
		for _, a := range args {
			if _, err := run(t, env, fn, a); !errors.Is(err, functions.ErrBadArgs) {
				t.Errorf("%s(%s) = %v, want ErrBadArgs", fn, a, err)
			}
		}
	}
}

// ------------------------------------------------------ unreachable, silent

// serviceCalls are one call of each service function, with the settings
// that point it at addr.
func serviceCalls(addr string) []struct {
	fn, args, service string
	settings          map[string]string
} {
	return []struct {
		fn, args, service string
		settings          map[string]string
	}{
		{"redis_insert", `{"id": "1", "balance": 1}`, "redis", map[string]string{"addr": addr, "password": "p", "dial_timeout": "300ms"}},
		{"redis_modify", `{"id": "Joe", "spend": 1}`, "redis", map[string]string{"addr": addr, "dial_timeout": "300ms"}},
		{"psql_inventory", `{}`, "postgres", map[string]string{"dsn": "postgres://postgres:pw@" + addr + "/bostonautosales?sslmode=disable", "dial_timeout": "300ms"}},
		{"psql_purchase", `{"id": 1}`, "postgres", map[string]string{"dsn": "postgres://postgres:pw@" + addr + "/bostonautosales?sslmode=disable", "dial_timeout": "300ms"}},
		{"upload_file", `{"file": "hosts"}`, "s3", map[string]string{"endpoint": "http://" + addr, "access_key": "a", "secret_key": "s", "bucket": "bucket", "dial_timeout": "300ms"}},
		{"download_file", `{"file": "x.doc"}`, "s3", map[string]string{"endpoint": addr, "access_key": "a", "secret_key": "s", "bucket": "bucket", "dial_timeout": "300ms"}},
		{"upload_kafka", `{"topic": "t", "message": "m"}`, "kafka", map[string]string{"brokers": addr, "dial_timeout": "300ms"}},
		{"read_kafka", `{"topic": "t"}`, "kafka", map[string]string{"brokers": addr, "dial_timeout": "300ms"}},
	}
}

func TestUnreachable(t *testing.T) {
	// A port that was free a moment ago: connections are refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	etc := t.TempDir()
	os.WriteFile(filepath.Join(etc, "hosts"), []byte("127.0.0.1 localhost\n"), 0o644)
	for _, c := range serviceCalls(addr) {
		t.Run(c.fn, func(t *testing.T) {
			env := functions.Env{Services: map[string]map[string]string{c.service: c.settings}, EtcDir: etc, DownloadDir: t.TempDir()}
			start := time.Now()
			_, err := run(t, env, c.fn, c.args)
			if !errors.Is(err, functions.ErrUnreachable) {
				t.Fatalf("%s against a closed port: %v, want ErrUnreachable", c.fn, err)
			}
			var ue *functions.UnreachableError
			if !errors.As(err, &ue) || ue.Service != c.service || ue.Func != c.fn || !strings.Contains(err.Error(), addr) {
				t.Errorf("error %q does not name the function, service and address", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestSilentServer(t *testing.T) {
	// A server that accepts connections and never answers: each function
	// must give up by its dial timeout (the handshake) or the job's
	// deadline, whichever comes first.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	etc := t.TempDir()
	os.WriteFile(filepath.Join(etc, "hosts"), []byte("127.0.0.1 localhost\n"), 0o644)
	for _, c := range serviceCalls(l.Addr().String()) {
		t.Run(c.fn, func(t *testing.T) {
			t.Parallel()
			env := functions.Env{Services: map[string]map[string]string{c.service: c.settings}, EtcDir: etc, DownloadDir: t.TempDir()}
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := runCtx(ctx, t, env, c.fn, c.args)
			d := time.Since(start)
			if err == nil {
				t.Fatal("no error from a silent server")
			}
			// Functions with a handshake (redis with a password, postgres,
			// kafka) report the server unreachable at the dial timeout;
			// the others wait for a reply until the job's deadline.
			handshake := map[string]bool{"redis_insert": true, "psql_inventory": true, "psql_purchase": true, "upload_kafka": true, "read_kafka": true}
			if handshake[c.fn] {
				if !errors.Is(err, functions.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded) || d > time.Second {
					t.Errorf("after %v: %v; want ErrUnreachable (not the job's deadline) at the 300ms dial timeout", d, err)
				}
			} else if !errors.Is(err, context.DeadlineExceeded) || d > 3*time.Second {
				t.Errorf("after %v: %v; want the job's deadline (1.5s)", d, err)
			}
		})
	}
}

func TestCancelledBeforeConnect(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range serviceCalls("127.0.0.1:9") {
		env := functions.Env{Services: map[string]map[string]string{c.service: c.settings}, EtcDir: t.TempDir(), DownloadDir: t.TempDir()}
		os.WriteFile(filepath.Join(env.EtcDir, "hosts"), []byte("x"), 0o644)
		_, err := runCtx(ctx, t, env, c.fn, c.args)
		if err == nil || !errors.Is(err, context.Canceled) {
			t.Errorf("%s on a cancelled context: %v, want context.Canceled", c.fn, err)
		}
	}
}
