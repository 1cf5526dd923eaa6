package functions

import (
	"slices"
	"sort"
)

// The catalogue is the one table of facts about the built-in functions:
// which exist and which services each needs. The worker's registry
// (Register, in each function's file) is checked against it by
// TestCatalogueMatchesRegistry; build tags (services.go), the lab's
// experiments (which services to start) and mforch demo (which functions
// run on a bare machine) read it instead of keeping lists of their own.
// It has no build tags, so a worker built without a client still knows
// what it left out.

// Kind is what a built-in function needs besides the worker's CPU.
type Kind string

const (
	KindCompute Kind = "compute" // nothing: runs on a bare machine
	KindService Kind = "service" // a service the cluster file names (Entry.Services)
)

// Entry is one built-in function of the catalogue.
type Entry struct {
	Name string
	// Services are the services (Services[i].Name: "redis", "postgres",
	// "s3", "kafka") the function talks to; none for a compute function.
	Services []string
}

// Kind is KindService when the function needs a service, else KindCompute.
func (e Entry) Kind() Kind {
	if len(e.Services) > 0 {
		return KindService
	}
	return KindCompute
}

// Catalogue lists every built-in function, sorted by name.
var Catalogue = []Entry{
	{Name: "cascading_md5"},
	{Name: "cascading_sha256"},
	{Name: "download_file", Services: []string{"s3"}},
	{Name: "float_operations"},
	{Name: "html_generation"},
	{Name: "matmul"},
	{Name: "psql_inventory", Services: []string{"postgres"}},
	{Name: "psql_purchase", Services: []string{"postgres"}},
	{Name: "pyaes"},
	{Name: "read_kafka", Services: []string{"kafka"}},
	{Name: "redis_insert", Services: []string{"redis"}},
	{Name: "redis_modify", Services: []string{"redis"}},
	{Name: "regex_match"},
	{Name: "regex_search"},
	{Name: "upload_file", Services: []string{"s3"}},
	{Name: "upload_kafka", Services: []string{"kafka"}},
	{Name: "zlib_decompress"},
}

// Describe returns the catalogue's entry for a built-in function.
func Describe(name string) (Entry, bool) {
	i, ok := sort.Find(len(Catalogue), func(i int) int {
		switch {
		case name < Catalogue[i].Name:
			return -1
		case name > Catalogue[i].Name:
			return 1
		}
		return 0
	})
	if !ok {
		return Entry{}, false
	}
	return Catalogue[i], true
}

// CatalogueNames lists the built-in functions of the kinds given (every
// function when none is given), sorted.
func CatalogueNames(kinds ...Kind) []string {
	var out []string
	for _, e := range Catalogue {
		if len(kinds) == 0 || slices.Contains(kinds, e.Kind()) {
			out = append(out, e.Name)
		}
	}
	return out
}

// ServicesFor lists the services the functions need, in the order of
// Services, each once. Names not in the catalogue (user functions) need
// none that MicroFaaS starts.
func ServicesFor(fns []string) []string {
	need := map[string]bool{}
	for _, f := range fns {
		if e, ok := Describe(f); ok {
			for _, s := range e.Services {
				need[s] = true
			}
		}
	}
	var out []string
	for _, s := range Services {
		if need[s.Name] {
			out = append(out, s.Name)
		}
	}
	return out
}
