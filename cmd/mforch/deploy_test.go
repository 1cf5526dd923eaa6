package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestDeployCommand runs `mforch deploy` against `mforch serve` with its
// defaults (its credentials found in the state folder): --list answers,
// a deploy on a cluster with no workers says there is no architecture to
// pull for, --delete of an unknown name says so, and a bad command line
// gets the usage.
func TestDeployCommand(t *testing.T) {
	api, state := serveDefaults(t)
	auth := filepath.Join(state, "microfaas", "auth")
	if _, err := os.Stat(filepath.Join(state, "microfaas", "bundles")); err != nil {
		t.Errorf("mforch serve made no bundle folder in its state folder: %v", err)
	}
	ctx := context.Background()
	if err := runDeploy(ctx, []string{"--list", "--addr", api, "--auth", auth}); err != nil {
		t.Errorf("--list: %v", err)
	}
	err := runDeploy(ctx, []string{"fn", "127.0.0.1:1/fn:1", "--addr", api, "--auth", auth})
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "no architecture") {
		t.Errorf("deploy with no workers: %v; want 400 naming no architecture", err)
	}
	err = runDeploy(ctx, []string{"--delete", "ghost", "--addr", api, "--auth", auth})
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "not deployed") {
		t.Errorf("--delete ghost: %v; want 404 not deployed", err)
	}
	for _, args := range [][]string{{}, {"only-name"}, {"a", "b", "c"}, {"--list", "x"}, {"--delete", "a", "b", "c"}} {
		if err := runDeploy(ctx, append(args, "--addr", api, "--auth", auth)); err == nil || !strings.Contains(err.Error(), "NAME and IMAGE") {
			t.Errorf("%q: %v; want the usage", args, err)
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	for _, tt := range []struct {
		args, pos []string
		addr      string
	}{
		{[]string{"a", "b"}, []string{"a", "b"}, ""},
		{[]string{"--addr", "x", "a", "b"}, []string{"a", "b"}, "x"},
		{[]string{"a", "--addr", "x", "b"}, []string{"a", "b"}, "x"},
		{[]string{"a", "b", "--addr=x"}, []string{"a", "b"}, "x"},
		{[]string{"a", "--", "-b"}, []string{"a", "-b"}, ""},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		addr := fs.String("addr", "", "")
		pos, err := parseInterspersed(fs, tt.args)
		if err != nil || !slices.Equal(pos, tt.pos) || *addr != tt.addr {
			t.Errorf("%q: %q addr %q %v; want %q addr %q", tt.args, pos, *addr, err, tt.pos, tt.addr)
		}
	}
}
