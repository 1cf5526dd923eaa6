package initramfs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// GoBuild compiles the Go package pkg (e.g. ./cmd/mfinit) of the module in
// dir for goarch (and goarm for "arm") into out: static (CGO off), stripped,
// without build ids or VCS stamps and with -trimpath, so the binary depends
// only on the source and the toolchain. tags are go build tags (e.g. the
// service clients a worker leaves out).
func GoBuild(ctx context.Context, dir, pkg, goarch, goarm, out string, tags ...string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-tags="+strings.Join(tags, ","), "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOFLAGS=")
	if goarch == "arm" {
		if goarm == "" {
			goarm = "7"
		}
		cmd.Env = append(cmd.Env, "GOARM="+goarm)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s: %w\n%s", pkg, goarch, err, stderr.String())
	}
	return nil
}
