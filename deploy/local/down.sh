#!/usr/bin/env bash
# Stops what deploy/local/up.sh started. Data under .local/ is kept.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
state="$root/.local"
pg_bin="${MTP_PG_BIN:-/usr/lib/postgresql/15/bin}"
for pidfile in "$state"/*.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then echo "stopped $(basename "$pidfile" .pid) (pid $pid)"; fi
  rm -f "$pidfile"
done
if [ -s "$state/pg/PG_VERSION" ]; then
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$pg_bin/pg_ctl" -D "$state/pg" -m fast stop; else "$pg_bin/pg_ctl" -D "$state/pg" -m fast stop; fi
fi
