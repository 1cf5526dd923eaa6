#!/usr/bin/env bash
# Stops the servers scripts/services/start.sh started (by the pid it saved).
set -euo pipefail

state="${MF_SERVICES_DIR:-${TMPDIR:-/tmp}/mf-services}"
if [ ! -f "$state/pid" ]; then
  echo "services/stop: nothing to stop (no $state/pid)"
  exit 0
fi
pid="$(cat "$state/pid")"
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "services/stop: pid $pid still running after 30 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
fi
rm -f "$state/pid" "$state/services.json"
echo "services/stop: stopped"
