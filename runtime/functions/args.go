package functions

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// args is a function's f_args object, decoded one level deep so that each
// argument is checked on its own and every error names the argument.
//
// Keys a function does not know are ignored: the original load generator
// sends some (psql_inventory gets {"a": 0}, upload_kafka a consumerID).
type args struct {
	fn string
	m  map[string]json.RawMessage
}

// parseArgs decodes f_args. Absent, empty or null arguments are an empty
// object; anything else that is not a JSON object is an error.
func parseArgs(fn string, raw json.RawMessage) (*args, error) {
	a := &args{fn: fn, m: map[string]json.RawMessage{}}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return a, nil
	}
	if trimmed[0] != '{' {
		return nil, argErrorf(fn, "", "want a JSON object, got %s", jsonKind(trimmed))
	}
	if err := json.Unmarshal(trimmed, &a.m); err != nil {
		return nil, argErrorf(fn, "", "not a valid JSON object: %v", err)
	}
	return a, nil
}

// get returns an argument's raw value, or nil if it is absent or null.
func (a *args) get(name string) json.RawMessage {
	v, ok := a.m[name]
	if !ok {
		return nil
	}
	v = bytes.TrimSpace(v)
	if string(v) == "null" {
		return nil
	}
	return v
}

// jsonKind names the JSON type of a raw value, for error messages.
func jsonKind(v json.RawMessage) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// parseInt reads an integer given as a JSON number (with no fraction) or as
// a string of decimal digits: the original load generator sends some
// integers as strings (redis balance and spend).
func parseInt(v json.RawMessage) (int64, error) {
	var s string
	switch {
	case len(v) > 0 && v[0] == '"':
		if err := json.Unmarshal(v, &s); err != nil {
			return 0, fmt.Errorf("not a valid JSON string")
		}
		s = strings.TrimSpace(s)
		if s == "" {
			return 0, fmt.Errorf("empty string, want an integer")
		}
	case len(v) > 0 && (v[0] == '-' || (v[0] >= '0' && v[0] <= '9')):
		s = string(v)
	default:
		return 0, fmt.Errorf("got %s, want an integer", jsonKind(v))
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err == nil {
		return n, nil
	}
	// 1e3 or 10.0: accept if it is a whole number that fits.
	f, ferr := strconv.ParseFloat(s, 64)
	if ferr != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not an integer", truncate(s, 40))
	}
	if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is not an integer in range", truncate(s, 40))
	}
	return int64(f), nil
}

// int returns a required integer argument within lo..hi.
func (a *args) int(name string, lo, hi int64) (int64, error) {
	v := a.get(name)
	if v == nil {
		return 0, argErrorf(a.fn, name, "missing (want an integer %d..%d)", lo, hi)
	}
	return a.checkInt(name, v, lo, hi)
}

// optInt returns an optional integer argument within lo..hi, or def.
func (a *args) optInt(name string, def, lo, hi int64) (int64, error) {
	v := a.get(name)
	if v == nil {
		return def, nil
	}
	return a.checkInt(name, v, lo, hi)
}

func (a *args) checkInt(name string, v json.RawMessage, lo, hi int64) (int64, error) {
	n, err := parseInt(v)
	if err != nil {
		return 0, argErrorf(a.fn, name, "%v", err)
	}
	if n < lo || n > hi {
		return 0, argErrorf(a.fn, name, "%d out of range %d..%d", n, lo, hi)
	}
	return n, nil
}

// str returns a required string argument of at most maxLen bytes.
func (a *args) str(name string, maxLen int) (string, error) {
	v := a.get(name)
	if v == nil {
		return "", argErrorf(a.fn, name, "missing (want a string)")
	}
	return a.checkStr(name, v, maxLen)
}

// optStr returns an optional string argument, or def.
func (a *args) optStr(name, def string, maxLen int) (string, error) {
	v := a.get(name)
	if v == nil {
		return def, nil
	}
	return a.checkStr(name, v, maxLen)
}

func (a *args) checkStr(name string, v json.RawMessage, maxLen int) (string, error) {
	if v[0] != '"' {
		return "", argErrorf(a.fn, name, "got %s, want a string", jsonKind(v))
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", argErrorf(a.fn, name, "not a valid JSON string: %v", err)
	}
	if len(s) > maxLen {
		return "", argErrorf(a.fn, name, "%d bytes long, at most %d allowed", len(s), maxLen)
	}
	return s, nil
}

// name returns an identifier-like argument (a key, an id, a group) given as
// a non-empty string or as an integer; integers become their decimal text.
func (a *args) name(name string, maxLen int) (string, error) {
	v := a.get(name)
	if v == nil {
		return "", argErrorf(a.fn, name, "missing (want a string or an integer)")
	}
	return a.checkName(name, v, maxLen)
}

// optName is name with a default for an absent argument.
func (a *args) optName(name, def string, maxLen int) (string, error) {
	v := a.get(name)
	if v == nil {
		return def, nil
	}
	return a.checkName(name, v, maxLen)
}

func (a *args) checkName(name string, v json.RawMessage, maxLen int) (string, error) {
	var s string
	if v[0] == '"' {
		var err error
		if s, err = a.checkStr(name, v, maxLen); err != nil {
			return "", err
		}
	} else {
		n, err := parseInt(v)
		if err != nil {
			return "", argErrorf(a.fn, name, "%v (want a string or an integer)", err)
		}
		s = strconv.FormatInt(n, 10)
	}
	if s == "" {
		return "", argErrorf(a.fn, name, "empty")
	}
	if !utf8.ValidString(s) {
		return "", argErrorf(a.fn, name, "not valid UTF-8")
	}
	return s, nil
}

// optBool returns an optional boolean argument, or def.
func (a *args) optBool(name string, def bool) (bool, error) {
	v := a.get(name)
	if v == nil {
		return def, nil
	}
	switch string(v) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, argErrorf(a.fn, name, "got %s, want true or false", jsonKind(v))
}

// optMillis returns an optional duration given in milliseconds, or def.
func (a *args) optMillis(name string, def, max time.Duration) (time.Duration, error) {
	ms, err := a.optInt(name, def.Milliseconds(), 0, max.Milliseconds())
	if err != nil {
		return 0, err
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// matrix returns a required square matrix of numbers of size 1..maxN.
func (a *args) matrix(name string, maxN int) ([][]float64, error) {
	v := a.get(name)
	if v == nil {
		return nil, argErrorf(a.fn, name, "missing (want a square matrix: an array of rows of numbers)")
	}
	if v[0] != '[' {
		return nil, argErrorf(a.fn, name, "got %s, want an array of rows of numbers", jsonKind(v))
	}
	var rows []json.RawMessage
	if err := json.Unmarshal(v, &rows); err != nil {
		return nil, argErrorf(a.fn, name, "not a valid JSON array: %v", err)
	}
	n := len(rows)
	if n == 0 {
		return nil, argErrorf(a.fn, name, "empty matrix")
	}
	if n > maxN {
		return nil, argErrorf(a.fn, name, "%d rows, at most %d allowed", n, maxN)
	}
	m := make([][]float64, n)
	for i, r := range rows {
		r = bytes.TrimSpace(r)
		if len(r) == 0 || r[0] != '[' {
			return nil, argErrorf(a.fn, name, "row %d: got %s, want an array of numbers", i, jsonKind(r))
		}
		if err := json.Unmarshal(r, &m[i]); err != nil {
			return nil, argErrorf(a.fn, name, "row %d: want an array of numbers: %v", i, err)
		}
		if len(m[i]) != n {
			return nil, argErrorf(a.fn, name, "not square: row %d has %d numbers, want %d", i, len(m[i]), n)
		}
	}
	return m, nil
}

// sortedKeys lists a set's members in order, for error messages.
func sortedKeys(m map[string]bool) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ------------------------------------------------------------------
// Service settings (the cluster file's services: section).

const (
	defaultDialTimeout = 5 * time.Second
	maxDialTimeout     = 2 * time.Minute
)

// settingDuration reads a Go duration ("5s", "250ms") from a service's
// settings, or returns def.
func settingDuration(fn, service string, s map[string]string, key string, def time.Duration) (time.Duration, error) {
	v, ok := s[key]
	if !ok || v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: service %q: setting %s=%q: %w", fn, service, key, v, err)
	}
	if d <= 0 || d > maxDialTimeout {
		return 0, fmt.Errorf("%s: service %q: setting %s=%q out of range (0, %s]", fn, service, key, v, maxDialTimeout)
	}
	return d, nil
}

// settingBool reads "true"/"false"/"1"/"0" from a service's settings.
func settingBool(fn, service string, s map[string]string, key string, def bool) (bool, error) {
	v, ok := s[key]
	if !ok || v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s: service %q: setting %s=%q is not a boolean: %w", fn, service, key, v, err)
	}
	return b, nil
}

// valueOr returns v, or def if v is empty.
func valueOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// requireSetting returns a setting that must be present.
func requireSetting(fn, service string, s map[string]string, key string) (string, error) {
	v := s[key]
	if v == "" {
		return "", fmt.Errorf("%s: service %q has no %q setting: add it under services: %s: in the cluster file", fn, service, key, service)
	}
	return v, nil
}
