#!/usr/bin/env bash
# Start the Prefect server on 127.0.0.1:$CDCORE_PREFECT_PORT and create the process work pool
# $CDCORE_POOL. Database: PostgreSQL (database prefect) when start-postgres.sh is running, else SQLite
# in $CDCORE_STACK_DIR/prefect; force one with CDCORE_PREFECT_DB=postgres|sqlite.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
stack_secrets
stack_urls
stack_need prefect "pip install -e . (prefect comes with cdcore)"
db=${CDCORE_PREFECT_DB:-}
if [ -z "$db" ]; then
  if [ -f "$CDCORE_STACK_DIR/pg/postmaster.pid" ]; then db=postgres; else db=sqlite; fi
fi
export PREFECT_HOME="$CDCORE_STACK_DIR/prefect"
mkdir -p "$PREFECT_HOME"
case $db in
  postgres) export PREFECT_SERVER_DATABASE_CONNECTION_URL="postgresql+asyncpg://postgres:${CDCORE_PG_PASSWORD}@$CDCORE_HOST:$CDCORE_PG_PORT/prefect" ;;
  sqlite) export PREFECT_SERVER_DATABASE_CONNECTION_URL="sqlite+aiosqlite:///$PREFECT_HOME/prefect.db" ;;
  *) stack_die "CDCORE_PREFECT_DB must be postgres or sqlite, got $db" ;;
esac
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=true
unset PREFECT_API_URL
stack_log "prefect: database $db"
stack_start_bg prefect "prefect server start" prefect server start --host "$CDCORE_HOST" --port "$CDCORE_PREFECT_PORT"
stack_wait_http prefect "$CDCORE_PREFECT_API/health" "${CDCORE_START_TIMEOUT:-120}"
export PREFECT_API_URL="$CDCORE_PREFECT_API"
if ! prefect work-pool inspect "$CDCORE_POOL" >/dev/null 2>&1; then
  prefect work-pool create "$CDCORE_POOL" --type process >/dev/null
  stack_log "prefect: created work pool $CDCORE_POOL (process)"
fi
