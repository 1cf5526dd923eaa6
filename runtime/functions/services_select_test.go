package functions

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestBuildTags(t *testing.T) {
	all := []string{"mf_no_kafka", "mf_no_postgres", "mf_no_redis", "mf_no_s3"}
	tests := []struct {
		sel     string
		want    []string
		wantErr error
	}{
		{"", nil, nil},
		{"all", nil, nil},
		{"compute", all, nil},
		{"cascading_sha256,matmul", all, nil},
		{"redis_insert", []string{"mf_no_kafka", "mf_no_postgres", "mf_no_s3"}, nil},
		{"read_kafka, psql_purchase ,upload_file", []string{"mf_no_redis"}, nil},
		{"cascading_sha256,no_such_fn", nil, ErrSelection},
		{"Compute", nil, ErrSelection},
	}
	for _, tt := range tests {
		got, err := BuildTags(tt.sel, Names())
		if !errors.Is(err, tt.wantErr) || !slices.Equal(got, tt.want) {
			t.Errorf("BuildTags(%q) = %v, %v; want %v, %v", tt.sel, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestServicesMatchSources: every service's functions are registered (in a
// build without tags), and its source file carries the service's tag, so
// the tag really leaves the client out.
func TestServicesMatchSources(t *testing.T) {
	for _, s := range Services {
		for _, e := range Catalogue {
			if slices.Contains(e.Services, s.Name) {
				if _, err := Lookup(e.Name); err != nil {
					t.Errorf("service %s: %v", s.Name, err)
				}
			}
		}
		b, err := os.ReadFile(s.Name + ".go")
		if err != nil {
			t.Fatal(err)
		}
		if first, _, _ := strings.Cut(string(b), "\n"); first != "//go:build !"+s.Tag {
			t.Errorf("%s.go starts with %q, want //go:build !%s", s.Name, first, s.Tag)
		}
	}
}
