#!/usr/bin/env bash
# Stop the PostgreSQL server started by start-postgres.sh (fast shutdown; KILL if it does not stop).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
BIN=$(stack_pg_bin)
PGDATA_DIR="$CDCORE_STACK_DIR/pg"
[ -f "$PGDATA_DIR/postmaster.pid" ] || { stack_log "postgres: not running"; exit 0; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pid=$(head -1 "$PGDATA_DIR/postmaster.pid")
if ! as_pg "$BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t "$CDCORE_STOP_GRACE" stop >/dev/null 2>&1; then
  if kill -0 "$pid" 2>/dev/null; then
    stack_log "postgres: still running after ${CDCORE_STOP_GRACE}s, sending KILL to $pid"
    kill -KILL "$pid" 2>/dev/null || true
  fi
fi
stack_log "postgres stopped"
