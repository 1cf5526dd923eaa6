// Command mf-testservices starts real Redis, PostgreSQL, S3 (versitygw) and
// Kafka (kfake) servers on loopback for trying the workload suite by hand,
// writes their settings as JSON (the services: section of a cluster file,
// in the shape functions.Env.Services takes), and runs until SIGINT or
// SIGTERM, then stops them all. scripts/services/start.sh and stop.sh drive
// it.
//
// It loads the bostonautosales database (functions.SeedPostgres) and the
// sample objects download_file asks for (functions.SeedS3), so every
// generated input of the suite has what it needs.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/microfaas/microfaas/internal/testsvc"
	"github.com/microfaas/microfaas/runtime/functions"
)

func main() {
	services := flag.String("services", "redis,postgres,s3,kafka", "comma-separated services to start")
	out := flag.String("out", "", "write the settings JSON to this file (default: stdout)")
	flag.Parse()
	if err := run(strings.Split(*services, ","), *out); err != nil {
		fmt.Fprintln(os.Stderr, "mf-testservices:", err)
		os.Exit(1)
	}
}

func run(names []string, out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	servers, err := testsvc.Start(ctx, names...)
	if err != nil {
		return err
	}
	defer testsvc.StopAll(servers, os.Stderr)
	settings := map[string]map[string]string{}
	for _, s := range servers {
		settings[s.Name] = s.Settings
		switch s.Name {
		case "postgres":
			dsn, err := functions.PostgresDSN(s.Settings)
			if err == nil {
				err = functions.SeedPostgres(ctx, dsn)
			}
			if err != nil {
				return err
			}
		case "s3":
			if err := functions.SeedS3(ctx, s.Settings); err != nil {
				return err
			}
		}
	}
	b, err := json.MarshalIndent(settings, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if out == "" {
		os.Stdout.Write(b)
	} else if err := os.WriteFile(out+".tmp", b, 0o600); err != nil {
		return err
	} else if err := os.Rename(out+".tmp", out); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "mf-testservices: running; stop with SIGINT or SIGTERM")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return nil
}
