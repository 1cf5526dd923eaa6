package functions

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestParseInt(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr string
	}{
		{`0`, 0, ""},
		{`-17`, -17, ""},
		{`"42"`, 42, ""},
		{`" 42 "`, 42, ""},
		{`1e3`, 1000, ""},
		{`10.0`, 10, ""},
		{`9223372036854775807`, 9223372036854775807, ""},
		{`9223372036854775808`, 0, "not an integer in range"},
		{`1.5`, 0, "not an integer"},
		{`"1.5"`, 0, "not an integer"},
		{`"abc"`, 0, "not an integer"},
		{`""`, 0, "empty string"},
		{`true`, 0, "got a boolean"},
		{`[1]`, 0, "got an array"},
		{`{"a":1}`, 0, "got an object"},
	} {
		got, err := parseInt(json.RawMessage(tc.in))
		if tc.wantErr == "" {
			if err != nil || got != tc.want {
				t.Errorf("parseInt(%s) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("parseInt(%s) = %d, %v; want error containing %q", tc.in, got, err, tc.wantErr)
		}
	}
}

func TestArgsHelpers(t *testing.T) {
	a, err := parseArgs("f", json.RawMessage(`{"s": "x", "n": 3, "id": 12, "sid": "ab", "null": null, "b": true}`))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := a.name("id", 10); err != nil || v != "12" {
		t.Errorf("name(id) = %q, %v", v, err)
	}
	if v, err := a.name("sid", 10); err != nil || v != "ab" {
		t.Errorf("name(sid) = %q, %v", v, err)
	}
	if v, err := a.optStr("null", "def", 10); err != nil || v != "def" {
		t.Errorf("optStr(null) = %q, %v: null must count as absent", v, err)
	}
	if _, err := a.str("s", 0); err == nil || !strings.Contains(err.Error(), "at most 0") {
		t.Errorf("str with maxLen 0: %v", err)
	}
	if _, err := a.name("b", 10); err == nil {
		t.Error("name(true) accepted")
	}
	if v, err := a.optBool("b", false); err != nil || !v {
		t.Errorf("optBool(b) = %v, %v", v, err)
	}
	var ae *ArgError
	_, err = a.int("missing", 0, 1)
	if !errors.As(err, &ae) || ae.Func != "f" || ae.Arg != "missing" || !errors.Is(err, ErrBadArgs) {
		t.Errorf("int(missing) error %#v", err)
	}
	for _, raw := range []string{``, `null`, ` `, `{}`} {
		if _, err := parseArgs("f", json.RawMessage(raw)); err != nil {
			t.Errorf("parseArgs(%q): %v", raw, err)
		}
	}
	for _, raw := range []string{`[]`, `"x"`, `1`, `{`, `{"a":}`} {
		if _, err := parseArgs("f", json.RawMessage(raw)); !errors.Is(err, ErrBadArgs) {
			t.Errorf("parseArgs(%q) = %v, want ErrBadArgs", raw, err)
		}
	}
}

func TestServiceNotConfigured(t *testing.T) {
	for fn, args := range map[string]string{
		"redis_insert":   `{"id": "1", "balance": 1}`,
		"redis_modify":   `{"id": "Joe", "spend": 1}`,
		"psql_inventory": `{}`,
		"psql_purchase":  `{"id": 1}`,
		"upload_file":    `{"file": "hosts"}`,
		"download_file":  `{"file": "x.doc"}`,
		"upload_kafka":   `{"topic": "t", "message": "m"}`,
		"read_kafka":     `{}`,
	} {
		_, err := call(t, fn, args)
		if err == nil || !strings.Contains(err.Error(), "is not configured") || !strings.HasPrefix(err.Error(), fn+": ") {
			t.Errorf("%s without services: %v", fn, err)
		}
	}
	// A service without its required setting says which.
	env := Env{Services: map[string]map[string]string{
		"redis": {"password": "x"}, "postgres": {"user": "u"}, "s3": {"endpoint": "h:1"}, "kafka": {"brokers": " , "},
	}}
	for fn, want := range map[string]string{
		"redis_insert":   `no "addr" setting`,
		"psql_inventory": "needs a dsn or a host",
		"upload_file":    `no "access_key" setting`,
		"read_kafka":     "names no broker",
	} {
		args := map[string]string{"redis_insert": `{"id": 1, "balance": 1}`, "upload_file": `{"file": "hosts"}`}[fn]
		_, err := callEnv(t, env, fn, args)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", fn, err, want)
		}
	}
}

func TestPostgresDSN(t *testing.T) {
	for _, tc := range []struct {
		in   map[string]string
		want string
	}{
		{map[string]string{"dsn": "postgres://a@b/c"}, "postgres://a@b/c"},
		{map[string]string{"host": "db"}, "host='db' port='5432' user='postgres' dbname='bostonautosales' sslmode='prefer'"},
		{map[string]string{"host": "db", "port": "6000", "user": "u", "password": `p'w\x`, "dbname": "d", "sslmode": "disable"},
			`host='db' port='6000' user='u' dbname='d' sslmode='disable' password='p\'w\\x'`},
	} {
		got, err := PostgresDSN(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("PostgresDSN(%v) = %s, %v\nwant %s", tc.in, got, err, tc.want)
		}
	}
	// pgconn reads the quoting back.
	dsn, _ := PostgresDSN(map[string]string{"host": "db", "password": `p'w\x y`})
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil || cfg.Password != `p'w\x y` || cfg.Database != "bostonautosales" || cfg.Port != 5432 {
		t.Errorf("ParseConfig(%s) = %+v, %v", dsn, cfg, err)
	}
	if _, err := PostgresDSN(map[string]string{"user": "x"}); err == nil {
		t.Error("PostgresDSN without host or dsn accepted")
	}
}
