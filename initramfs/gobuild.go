package initramfs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/microfaas/microfaas/target"
)

// GoBuild compiles the Go package pkg (e.g. ./cmd/mfinit) of the module in
// dir for target t into out: static (CGO off), stripped,
// without build ids or VCS stamps and with -trimpath, so the binary depends
// only on the source and the toolchain. tags are go build tags (e.g. the
// service clients a worker leaves out).
func GoBuild(ctx context.Context, dir, pkg string, t *target.Target, out string, tags ...string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-tags="+strings.Join(tags, ","), "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+t.GOARCH, "GOFLAGS=")
	if t.GOARM != "" {
		cmd.Env = append(cmd.Env, "GOARM="+t.GOARM)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s: %w\n%s", pkg, t.GOARCH, err, stderr.String())
	}
	return nil
}
