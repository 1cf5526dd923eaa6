//go:build !mf_no_kafka && !mf_no_postgres && !mf_no_redis && !mf_no_s3

package functions

import "testing"

// TestCatalogueRegistered: with every client built in, every catalogued
// function is registered.
func TestCatalogueRegistered(t *testing.T) {
	for _, e := range Catalogue {
		if _, err := Lookup(e.Name); err != nil {
			t.Errorf("%s is in the catalogue but not registered: %v", e.Name, err)
		}
	}
}
