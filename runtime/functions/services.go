package functions

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// A Service is a client library that some built-in functions need. Each
// client is megabytes of the worker binary (Kafka about 3.7 MB, S3 2.4 MB,
// PostgreSQL 1.1 MB), so a worker image can be built without the clients
// its cluster's functions do not use: building with the service's Tag
// leaves its file (kafka.go, s3.go, ...) and functions out. Which
// functions use a service is the catalogue's (catalogue.go).
type Service struct {
	Name string
	Tag  string // go build tag that leaves the client out
}

// Services lists every service client in the worker.
var Services = []Service{
	{Name: "kafka", Tag: "mf_no_kafka"},
	{Name: "postgres", Tag: "mf_no_postgres"},
	{Name: "redis", Tag: "mf_no_redis"},
	{Name: "s3", Tag: "mf_no_s3"},
}

// The selections BuildTags accepts besides a list of names.
const (
	SelectAll     = "all"     // every built-in function and client (the default)
	SelectCompute = "compute" // the functions that need no service
)

// ErrSelection means a built-in function selection names something that is
// not a built-in function.
var ErrSelection = errors.New("unknown built-in function")

// BuildTags returns the go build tags for a worker that carries the
// selected built-in functions: "all" or "" (every client), "compute" (no
// client), or comma-separated function names (the clients they need). The
// compute functions are always in. known is the full list of built-in
// names (Names() of a build without tags) to check the names against.
func BuildTags(selection string, known []string) ([]string, error) {
	need := map[string]bool{}
	switch selection {
	case "", SelectAll:
		return nil, nil
	case SelectCompute:
	default:
		for _, n := range strings.Split(selection, ",") {
			n = strings.TrimSpace(n)
			if n == "" {
				continue
			}
			if !slices.Contains(known, n) {
				return nil, fmt.Errorf("%w %q: want all, compute or names from %v", ErrSelection, n, known)
			}
			for _, s := range ServicesFor([]string{n}) {
				need[s] = true
			}
		}
	}
	var tags []string
	for _, s := range Services {
		if !need[s.Name] {
			tags = append(tags, s.Tag)
		}
	}
	return tags, nil
}
