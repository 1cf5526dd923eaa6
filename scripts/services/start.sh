#!/usr/bin/env bash
# Starts real Redis, PostgreSQL, S3 (versitygw) and Kafka (kfake) servers on
# loopback for trying the workload suite by hand, loads the bostonautosales
# database and the sample objects, and prints the services: settings as JSON
# (also written to $MF_SERVICES_DIR/services.json).
#
# Usage: scripts/services/start.sh [redis,postgres,s3,kafka]
# Stop them with scripts/services/stop.sh. Run install.sh first.
# The automated tests do not need this: they start their own servers.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${MF_SERVICES_DIR:-${TMPDIR:-/tmp}/mf-services}"
services="${1:-redis,postgres,s3,kafka}"
mkdir -p "$state"

if [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
  echo "services/start: already running (pid $(cat "$state/pid")); settings:" >&2
  cat "$state/services.json"
  exit 0
fi
rm -f "$state/services.json" "$state/pid"

echo "services/start: building mf-testservices" >&2
(cd "$repo" && go build -o "$state/mf-testservices" ./internal/testsvc/cmd/mf-testservices)

nohup "$state/mf-testservices" -services "$services" -out "$state/services.json" \
  >"$state/mf-testservices.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$state/pid"

for _ in $(seq 1 600); do
  if [ -s "$state/services.json" ]; then
    echo "services/start: running (pid $pid, log $state/mf-testservices.log); settings:" >&2
    cat "$state/services.json"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "services/start: mf-testservices exited; its log:" >&2
    cat "$state/mf-testservices.log" >&2
    rm -f "$state/pid"
    exit 1
  fi
  sleep 0.2
done
echo "services/start: services not ready after 120 s; see $state/mf-testservices.log" >&2
kill -TERM "$pid" 2>/dev/null || true
exit 1
