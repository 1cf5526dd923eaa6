#!/usr/bin/env bash
# Installs what the workload suite's service tests need, only if missing:
#   - Debian packages redis-server (redis-server, redis-cli) and postgresql
#     (initdb, postgres), for real Redis and PostgreSQL servers;
#   - versitygw (an S3 server over a directory), built from the Go module
#     proxy with `go install`.
# Kafka needs nothing: the tests run franz-go's kfake in process.
#
# Usage: scripts/services/install.sh [--check]
#   --check  only report what is missing; exit 1 if anything is.
# Works as root, or as a user with sudo (for apt-get).
# Environment: VERSITYGW_BIN_DIR overrides where versitygw goes
# (default /usr/local/bin as root, else $(go env GOPATH)/bin).
set -euo pipefail

VERSITYGW_PKG="github.com/versity/versitygw/cmd/versitygw@v1.8.0"
check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
  *) echo "install.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
esac

say() { echo "services/install: $*"; }

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  SUDO=(false)
fi

deb_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing_debs=()
if ! command -v redis-server >/dev/null 2>&1 && ! deb_installed redis-server; then
  missing_debs+=(redis-server)
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! deb_installed postgresql; then
  missing_debs+=(postgresql)
fi

find_versitygw() {
  local d
  if [ -n "${MF_VERSITYGW:-}" ] && [ -x "$MF_VERSITYGW" ]; then echo "$MF_VERSITYGW"; return 0; fi
  if command -v versitygw >/dev/null 2>&1; then command -v versitygw; return 0; fi
  for d in "${GOBIN:-}" "$(go env GOPATH 2>/dev/null)/bin" "$HOME/go/bin" /usr/local/bin; do
    if [ -n "$d" ] && [ -x "$d/versitygw" ]; then echo "$d/versitygw"; return 0; fi
  done
  return 1
}
need_versitygw=0
if gw=$(find_versitygw); then
  say "versitygw present: $gw"
else
  need_versitygw=1
fi

if [ "$check_only" -eq 1 ]; then
  status=0
  if [ ${#missing_debs[@]} -gt 0 ]; then say "missing Debian packages: ${missing_debs[*]}"; status=1; fi
  if [ "$need_versitygw" -eq 1 ]; then say "missing versitygw (go install $VERSITYGW_PKG)"; status=1; fi
  [ "$status" -eq 0 ] && say "everything is installed"
  exit "$status"
fi

if [ ${#missing_debs[@]} -gt 0 ]; then
  if [ "${SUDO[0]:-}" = false ]; then
    echo "services/install: need root or sudo to install ${missing_debs[*]}" >&2
    exit 1
  fi
  say "installing Debian packages: ${missing_debs[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing_debs[@]}"
else
  say "Debian packages present: redis-server, postgresql"
fi

if [ "$need_versitygw" -eq 1 ]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "services/install: go is needed to build versitygw ($VERSITYGW_PKG)" >&2
    exit 1
  fi
  if [ -n "${VERSITYGW_BIN_DIR:-}" ]; then
    dest="$VERSITYGW_BIN_DIR"
  elif [ "$(id -u)" -eq 0 ]; then
    dest=/usr/local/bin
  else
    dest="$(go env GOPATH)/bin"
  fi
  mkdir -p "$dest"
  say "installing versitygw into $dest: go install $VERSITYGW_PKG (a few minutes the first time)"
  # Run outside any module so that go install uses versitygw's own go.mod.
  (cd / && GOBIN="$dest" CGO_ENABLED=0 GOFLAGS=-trimpath go install "$VERSITYGW_PKG")
  say "installed $dest/versitygw"
fi
