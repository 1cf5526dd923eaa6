package functions

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestCatalogueMatchesRegistry: every function the worker registers has a
// catalogue entry (catalogue_full_test.go checks the other way, in a build
// with every client).
func TestCatalogueMatchesRegistry(t *testing.T) {
	for _, n := range Names() {
		if _, ok := Describe(n); !ok {
			t.Errorf("%s is registered but not in the catalogue: add it to Catalogue (catalogue.go) with the services it needs", n)
		}
	}
}

func TestCatalogueWellFormed(t *testing.T) {
	known := map[string]bool{}
	for _, s := range Services {
		known[s.Name] = true
	}
	used := map[string]bool{}
	for i, e := range Catalogue {
		if i > 0 && Catalogue[i-1].Name >= e.Name {
			t.Errorf("Catalogue is not sorted or has a duplicate at %s (Describe searches it)", e.Name)
		}
		if got, ok := Describe(e.Name); !ok || got.Name != e.Name {
			t.Errorf("Describe(%s) = %v, %v", e.Name, got, ok)
		}
		for _, s := range e.Services {
			if !known[s] {
				t.Errorf("%s needs service %q, which is not in Services", e.Name, s)
			}
			used[s] = true
		}
	}
	for _, s := range Services {
		if !used[s.Name] {
			t.Errorf("service %s: no catalogued function uses it", s.Name)
		}
	}
	if _, ok := Describe("no_such_function"); ok {
		t.Error("Describe found no_such_function")
	}
}

// TestCatalogueHasInputs: the load generator makes inputs for exactly the
// catalogued functions.
func TestCatalogueHasInputs(t *testing.T) {
	var gen []string
	for n := range inputGenerators {
		gen = append(gen, n)
	}
	slices.Sort(gen)
	if all := CatalogueNames(); !slices.Equal(gen, all) {
		t.Errorf("input generators for %v\ncatalogue: %v", gen, all)
	}
}

func TestCatalogueKinds(t *testing.T) {
	compute := CatalogueNames(KindCompute)
	want := []string{"cascading_md5", "cascading_sha256", "float_operations", "html_generation", "matmul",
		"pyaes", "regex_match", "regex_search", "zlib_decompress"}
	if !slices.Equal(compute, want) {
		t.Errorf("compute functions %v, want %v", compute, want)
	}
	if n := len(CatalogueNames(KindCompute, KindService)); n != len(Catalogue) {
		t.Errorf("both kinds: %d names, want %d", n, len(Catalogue))
	}
}

func TestServicesFor(t *testing.T) {
	for _, tt := range []struct {
		fns  []string
		want string
	}{
		{nil, ""},
		{[]string{"matmul", "pyaes"}, ""},
		{[]string{"redis_insert", "redis_modify"}, "redis"},
		{[]string{"upload_file", "read_kafka", "psql_purchase", "matmul"}, "kafka,postgres,s3"},
		{[]string{"wordcount"}, ""}, // a user function: nothing MicroFaaS starts
		{CatalogueNames(), "kafka,postgres,redis,s3"},
	} {
		if got := strings.Join(ServicesFor(tt.fns), ","); got != tt.want {
			t.Errorf("ServicesFor(%v) = %q, want %q", tt.fns, got, tt.want)
		}
	}
}

// TestLookupNamesMissingClient: a catalogued function the worker was built
// without is refused with the client it lacks, not as a stranger.
func TestLookupNamesMissingClient(t *testing.T) {
	mu.Lock()
	fn := registry["read_kafka"]
	delete(registry, "read_kafka") // as in a build with mf_no_kafka
	mu.Unlock()
	t.Cleanup(func() {
		mu.Lock()
		if fn != nil {
			registry["read_kafka"] = fn
		}
		mu.Unlock()
	})
	_, err := Lookup("read_kafka")
	if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "without the [kafka] client") {
		t.Errorf("Lookup(read_kafka) without the client = %v", err)
	}
	if _, err := Lookup("no_such_function"); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "built in:") {
		t.Errorf("Lookup(no_such_function) = %v", err)
	}
}
