#!/usr/bin/env bash
# Builds the OpenFaaS parts that run against mforch's provider API, from the
# Go module proxy, only if missing:
#   openfaas-gateway        the OpenFaaS gateway (github.com/openfaas/faas/gateway)
#   faas-cli                the OpenFaaS CLI (github.com/openfaas/faas-cli)
#   nats-streaming-server   NATS Streaming, the gateway's async queue
#   openfaas-queue-worker   OpenFaaS's NATS queue-worker (github.com/openfaas/nats-queue-worker)
# and Debian's prometheus package: the gateway needs a Prometheus (it panics
# listing functions without one), as in every OpenFaaS install.
# orchestrator/openfaas/gateway_test.go runs them end to end; docs/openfaas.md
# shows the commands.
#
# Versions are pinned to exact module versions: the proxy reachable here
# serves these exact versions but lists none, so `go install pkg@latest` and
# `go install pkg@VERSION` both fail (they look up the version list for
# deprecation notices). Each tool is therefore built from a throw-away module
# that requires it at its pinned version, with every dependency pinned too
# (a go.mod written below), so nothing resolves to "latest".
#
# faas-cli and the gateway tag their releases without the "v" Go needs, so
# only pseudo-versions (commit date + hash) exist on the proxy:
#   faas-cli  v0.0.0-20211012083206-08e3e965c831  (commit 08e3e965c831, October 2021)
#   gateway   v0.0.0-20230317100158-e44448c5dca2  (commit e44448c5dca2, March 2023; faas-provider v0.19.1)
# Newer commits of either exist on GitHub but the proxy here refuses them.
#
# Usage: scripts/openfaas/install.sh [--check]
#   --check  only report what is missing; exit 1 if anything is.
# Environment: OPENFAAS_BIN_DIR overrides where the binaries go
# (default /usr/local/bin as root, else $(go env GOPATH)/bin).
set -euo pipefail

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
  *) echo "install.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
esac

say() { echo "openfaas/install: $*"; }

if [ -n "${OPENFAAS_BIN_DIR:-}" ]; then
  bin_dir=$OPENFAAS_BIN_DIR
elif [ "$(id -u)" -eq 0 ]; then
  bin_dir=/usr/local/bin
else
  bin_dir=$(go env GOPATH)/bin
fi

GATEWAY_VERSION=v0.0.0-20230317100158-e44448c5dca2
FAASCLI_VERSION=v0.0.0-20211012083206-08e3e965c831
QUEUEWORKER_VERSION=v0.0.0-20230117214128-3615ccb286cc
NATS_STREAMING_VERSION=v0.25.6

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  SUDO=(false)
fi

missing=()
if command -v prometheus >/dev/null 2>&1; then
  say "prometheus present: $(command -v prometheus)"
else
  missing+=(prometheus)
fi
for b in openfaas-gateway faas-cli nats-streaming-server openfaas-queue-worker; do
  if [ -x "$bin_dir/$b" ]; then
    say "$b present: $bin_dir/$b"
  else
    missing+=("$b")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ $check_only -eq 1 ]; then
  say "missing: ${missing[*]} (run scripts/openfaas/install.sh)"
  exit 1
fi
want() { for m in "${missing[@]}"; do [ "$m" = "$1" ] && return 0; done; return 1; }

if want prometheus; then
  say "installing Debian's prometheus"
  if ! apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    "${SUDO[@]}" apt-get update
  fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
fi
command -v go >/dev/null 2>&1 || { say "go not found: install Go first"; exit 1; }
mkdir -p "$bin_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# build NAME PKG LDFLAGS: go.mod (stdin) and a tools.go importing PKG, then
# go build of PKG into $bin_dir/NAME.
build() {
  local name=$1 pkg=$2 ldflags=$3 dir="$work/$1"
  mkdir -p "$dir"
  cat >"$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" >"$dir/tools.go"
  say "building $name ($pkg)"
  (cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin_dir/$name" "$pkg")
  say "$name -> $bin_dir/$name"
}

if want openfaas-gateway; then
  build openfaas-gateway github.com/openfaas/faas/gateway \
    "-X github.com/openfaas/faas/gateway/version.Version=$GATEWAY_VERSION -X github.com/openfaas/faas/gateway/version.GitCommitSHA=e44448c5dca2" <<EOF
module openfaas-gateway-build

go 1.21

require github.com/openfaas/faas/gateway $GATEWAY_VERSION

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.1.2 // indirect
	github.com/docker/distribution v2.8.1+incompatible // indirect
	github.com/gogo/protobuf v1.3.2 // indirect
	github.com/golang/protobuf v1.5.2 // indirect
	github.com/gorilla/mux v1.8.0 // indirect
	github.com/matttproud/golang_protobuf_extensions v1.0.1 // indirect
	github.com/nats-io/nats.go v1.22.1 // indirect
	github.com/nats-io/nkeys v0.4.17 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/nats-io/stan.go v0.10.4 // indirect
	github.com/openfaas/faas-provider v0.19.1 // indirect
	github.com/openfaas/nats-queue-worker $QUEUEWORKER_VERSION // indirect
	github.com/prometheus/client_golang v1.13.0 // indirect
	github.com/prometheus/client_model v0.2.0 // indirect
	github.com/prometheus/common v0.37.0 // indirect
	github.com/prometheus/procfs v0.8.0 // indirect
	golang.org/x/crypto v0.52.0 // indirect
	golang.org/x/sync v0.20.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	google.golang.org/protobuf v1.28.1 // indirect
)
EOF
fi

if want faas-cli; then
  build faas-cli github.com/openfaas/faas-cli \
    "-X github.com/openfaas/faas-cli/version.Version=$FAASCLI_VERSION -X github.com/openfaas/faas-cli/version.GitCommit=08e3e965c831" <<EOF
module faas-cli-build

go 1.21

require github.com/openfaas/faas-cli $FAASCLI_VERSION

require (
	github.com/Azure/go-ansiterm v0.0.0-20170929234023-d6e3b3328b78 // indirect
	github.com/alexellis/go-execute v0.0.0-20191207085904-961405ea7544 // indirect
	github.com/alexellis/hmac v0.0.0-20180624210714-d5d71edd7bc7 // indirect
	github.com/docker/docker v17.12.0-ce-rc1.0.20200618181300-9dc6525e6118+incompatible // indirect
	github.com/drone/envsubst v1.0.2 // indirect
	github.com/inconshreveable/mousetrap v1.0.0 // indirect
	github.com/konsorten/go-windows-terminal-sequences v1.0.3 // indirect
	github.com/mitchellh/go-homedir v1.1.0 // indirect
	github.com/morikuni/aec v1.0.0 // indirect
	github.com/openfaas/faas-provider v0.18.5 // indirect
	github.com/openfaas/faas/gateway v0.0.0-20210311210633-a6dbb4cd0285 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/ryanuber/go-glob v1.0.0 // indirect
	github.com/sirupsen/logrus v1.6.0 // indirect
	github.com/spf13/cobra v0.0.7 // indirect
	github.com/spf13/pflag v1.0.5 // indirect
	golang.org/x/sys v0.0.0-20210119212857-b64e53b001e4 // indirect
	gopkg.in/yaml.v2 v2.3.0 // indirect
)
EOF
fi

queue_mod() {
  cat <<EOF
module openfaas-queue-build

go 1.21

require (
	github.com/nats-io/nats-streaming-server $NATS_STREAMING_VERSION
	github.com/openfaas/nats-queue-worker $QUEUEWORKER_VERSION
)

require (
	github.com/armon/go-metrics v0.4.1 // indirect
	github.com/fatih/color v1.16.0 // indirect
	github.com/go-sql-driver/mysql v1.7.1 // indirect
	github.com/gogo/protobuf v1.3.2 // indirect
	github.com/hashicorp/go-hclog v1.5.0 // indirect
	github.com/hashicorp/go-immutable-radix v1.3.1 // indirect
	github.com/hashicorp/go-msgpack/v2 v2.1.1 // indirect
	github.com/hashicorp/golang-lru v1.0.2 // indirect
	github.com/hashicorp/raft v1.6.0 // indirect
	github.com/klauspost/compress v1.17.3 // indirect
	github.com/lib/pq v1.10.9 // indirect
	github.com/mattn/go-colorable v0.1.13 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/minio/highwayhash v1.0.2 // indirect
	github.com/nats-io/jwt/v2 v2.5.3 // indirect
	github.com/nats-io/nats-server/v2 v2.9.24 // indirect
	github.com/nats-io/nats.go v1.31.0 // indirect
	github.com/nats-io/nkeys v0.4.6 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/nats-io/stan.go v0.10.4 // indirect
	github.com/openfaas/faas-provider v0.19.1 // indirect
	github.com/prometheus/procfs v0.12.0 // indirect
	go.etcd.io/bbolt v1.3.8 // indirect
	golang.org/x/crypto v0.15.0 // indirect
	golang.org/x/sys v0.14.0 // indirect
	golang.org/x/time v0.4.0 // indirect
)
EOF
}

if want nats-streaming-server; then
  queue_mod | build nats-streaming-server github.com/nats-io/nats-streaming-server ""
fi
if want openfaas-queue-worker; then
  queue_mod | build openfaas-queue-worker github.com/openfaas/nats-queue-worker ""
fi
say "done"
