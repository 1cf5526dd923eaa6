package deploy

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/microfaas/microfaas/bundle/oci"
)

// DefaultRegistryConfig is the docker config file used when none is given:
// $DOCKER_CONFIG/config.json, else ~/.docker/config.json, if it exists;
// "" if neither does (images are then pulled anonymously).
func DefaultRegistryConfig() string {
	var candidates []string
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		candidates = append(candidates, filepath.Join(d, "config.json"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, ".docker", "config.json"))
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			return c
		}
	}
	return ""
}

// NewResolver is the resolver mforch serve pulls with: credentials from
// the docker config file (its auths and credHelpers; "" for anonymous
// pulls) and plain HTTP to the insecure registry hosts (host or host:port).
func NewResolver(configFile string, insecure []string) (*oci.Resolver, error) {
	r := &oci.Resolver{Insecure: insecure} // no Keychain: anonymous
	if configFile == "" {
		return r, nil
	}
	kc, err := oci.ConfigKeychain(configFile)
	if err != nil {
		return nil, fmt.Errorf("%w (--registry-config)", err)
	}
	r.Keychain = kc
	return r, nil
}
