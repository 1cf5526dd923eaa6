package main

import (
	"context"
	"flag"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/microfaas/microfaas/internal/statedir"
	"github.com/microfaas/microfaas/lab/rig"
	"github.com/microfaas/microfaas/orchestrator/deploy"
	"github.com/microfaas/microfaas/orchestrator/natsq"
)

func runServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch serve", flag.ContinueOnError)
	var c clusterFlags
	c.register(fs)
	var s rig.ServeConfig
	fs.StringVar(&s.HTTP, "http", "127.0.0.1:8080", "HTTP API address: mforch's API (POST /invoke/{function}, GET /status)\n"+
		"and, unless --openfaas=false or --openfaas-http is set, the OpenFaaS provider API (/system/*, /function/*,\n"+
		"/async-function/*, /healthz). An OpenFaaS gateway on the same host listens on :8080 itself: then use another port")
	fs.DurationVar(&s.Grace, "grace", 2*time.Minute, "on SIGTERM: how long running jobs may take to finish before their workers are powered off\n"+
		"(queued invocations stay in --store and run after the next start)")
	allowHosts := fs.String("http-allow-host", "", "comma-separated host names the HTTP API answers to besides IP addresses and localhost\n"+
		"(a request naming another host in its Host header is refused: DNS rebinding)")
	allowOrigins := fs.String("http-allow-origin", "", "comma-separated origins (http://gateway:8080) whose web pages may call the HTTP API from a browser\n"+
		"(e.g. the OpenFaaS gateway's UI); other cross-origin requests are refused")
	// The OpenFaaS provider API (docs/openfaas.md).
	fs.BoolVar(&s.OpenFaaS, "openfaas", true, "serve the OpenFaaS provider API (faas-provider v0.25), so an OpenFaaS gateway and faas-cli work with mforch")
	fs.StringVar(&s.OpenFaaSHTTP, "openfaas-http", "", "serve the provider API on this address instead of on --http's listener")
	fs.StringVar(&s.AuthDir, "openfaas-auth", "", "folder with basic-auth-user and basic-auth-password (the gateway's secret_mount_path layout),\n"+
		"created with user admin and a random password (files 0600, folder 0700) if missing: every HTTP route\n"+
		"requires these credentials (mforch's own API and /system/*), except /healthz, /function/* and\n"+
		"/async-function/*, which an OpenFaaS gateway calls without them\n"+
		"(default: $STATE_DIRECTORY/auth, else $XDG_STATE_HOME/microfaas/auth, else ~/.local/state/microfaas/auth)")
	callbackAllow := fs.String("openfaas-callback-allow", "", "comma-separated hosts, addresses or CIDR prefixes async calls' X-Callback-Url may name\n"+
		"(others get 400). Empty: any host")
	fs.StringVar(&s.StateFile, "openfaas-state", "", "file that keeps deployed functions and secrets across restarts (empty: in memory)")
	// Run-time deploys (docs/openfaas.md, "Functions and images").
	var d rig.DeployConfig
	fs.StringVar(&d.Dir, "bundles", "", "folder for the bundles of functions deployed at run time and their deployments.json\n"+
		"(default: bundles/ in the state folder: $STATE_DIRECTORY, else $XDG_STATE_HOME/microfaas, else ~/.local/state/microfaas).\n"+
		"Give each mforch on a host its own: unused bundles are removed from it")
	fs.StringVar(&d.RegistryConfig, "registry-config", deploy.DefaultRegistryConfig(), "docker config.json with the credentials (auths, credHelpers) for pulling deployed images\n"+
		"(default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json, if present; else anonymous pulls)")
	fs.Var((*listFlag)(&d.Insecure), "insecure-registry", "registry HOST[:PORT] pulled from over plain HTTP (a local registry); repeatable")
	// Past one host (docs/scale-out.md).
	var q natsq.Options
	fs.StringVar(&q.URLs, "queue", "", "share one durable queue with other mforch instances: NATS servers with JetStream,\n"+
		"nats://HOST:PORT[,nats://HOST:PORT...] (instead of --store; docs/scale-out.md)")
	fs.StringVar(&q.CredsFile, "queue-creds", "", "with --queue: NATS credentials file (user JWT and seed)")
	fs.StringVar(&q.TLSCA, "queue-tls-ca", "", "with --queue: CA certificate the NATS servers' certificates are checked against (turns TLS on)")
	fs.StringVar(&q.TLSCert, "queue-tls-cert", "", "with --queue: client certificate for mutual TLS (with --queue-tls-key)")
	fs.StringVar(&q.TLSKey, "queue-tls-key", "", "with --queue: the client certificate's key")
	fs.StringVar(&q.KeyFile, "queue-key", "", "with --queue: key file sealing queued invocations' secrets and headers, made if missing (mode 0600);\n"+
		"copy the same file to every instance (default: queue.key in the state folder)")
	fs.IntVar(&q.Replicas, "queue-replicas", 1, "with --queue: replicas of the stream and the results bucket (3 on a three-node NATS cluster)")
	fs.StringVar(&q.Name, "queue-name", "", "with --queue: this instance's name in mforch status (default: the host name; give each instance on one host its own)")
	fs.DurationVar(&q.AckWait, "queue-ack-wait", 30*time.Second, "with --queue: how long an invocation held by an instance that died waits before another instance runs it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s.AllowHosts, s.AllowOrigins = rig.SplitList(*allowHosts), rig.SplitList(*allowOrigins)
	s.CallbackAllow = rig.SplitList(*callbackAllow)
	s.Version = buildVersion()
	cfg, err := c.config()
	if err != nil {
		return err
	}
	if q.URLs != "" {
		if q.KeyFile == "" {
			dir, err := statedir.Dir()
			if err != nil {
				return err
			}
			q.KeyFile = filepath.Join(dir, "queue.key")
		}
		cfg.Queue = &q
	}
	if cfg.Deploys, err = rig.OpenDeploys(d, cfg.Log); err != nil {
		return err
	}
	r, err := rig.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer r.Close()
	return rig.Serve(ctx, r, s)
}

// buildVersion is mforch's module version, for /system/info.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
