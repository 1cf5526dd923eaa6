package oci

import (
	"debug/elf"
	"fmt"
	"io"
	"log/slog"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/microfaas/microfaas/bundle"
)

// ImageConfig is the part of img's config a worker needs.
func ImageConfig(img v1.Image) (bundle.Config, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return bundle.Config{}, fmt.Errorf("image config: %w", err)
	}
	return bundle.Config{Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd, Env: cf.Config.Env,
		WorkingDir: cf.Config.WorkingDir, User: cf.Config.User}, nil
}

// Build writes img's bundle to w for a worker whose CPU is machine:
// Flatten, Check, bundle.Encode. It is the one path from an image to what a
// worker runs; mfbuild lays the same tree out in the initramfs instead.
func Build(img v1.Image, machine elf.Machine, lim bundle.Limits, w io.Writer) (bundle.Config, error) {
	cfg, err := ImageConfig(img)
	if err != nil {
		return bundle.Config{}, err
	}
	t, err := Flatten(img, lim)
	if err != nil {
		return bundle.Config{}, fmt.Errorf("flatten image: %w", err)
	}
	if t.Dropped > 0 || t.Stripped > 0 {
		slog.Info("image changed to run on a worker", "device_nodes_dropped", t.Dropped, "setuid_setgid_cleared", t.Stripped)
	}
	if err := Check(t, cfg, machine); err != nil {
		return bundle.Config{}, err
	}
	if err := bundle.Encode(w, t, cfg); err != nil {
		return bundle.Config{}, err
	}
	return cfg, nil
}
