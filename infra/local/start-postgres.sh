#!/usr/bin/env bash
# Start PostgreSQL on 127.0.0.1:$CDCORE_PG_PORT with databases `prefect` and `mlflow`.
# Needs the Debian package postgresql-15 (apt-get install -y postgresql-15). PostgreSQL refuses to run
# as root: when run as root the server runs as the `postgres` user. Password auth (scram-sha-256);
# the password is CDCORE_PG_PASSWORD or generated into $CDCORE_STACK_DIR/secrets.env.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
stack_secrets
stack_urls

BIN=$(stack_pg_bin)
[ -n "$BIN" ] && [ -x "$BIN/pg_ctl" ] || stack_die "PostgreSQL server not installed: apt-get install -y postgresql-15"
PGDATA_DIR="$CDCORE_STACK_DIR/pg"

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || stack_die "user postgres missing (it comes with the postgresql-15 package)"
  runuser -u postgres -- test -x "$CDCORE_STACK_DIR" ||
    stack_die "the postgres user cannot reach $CDCORE_STACK_DIR: set CDCORE_STACK_DIR to a folder whose parents are world-traversable (e.g. under /tmp or /srv)"
fi

if [ ! -s "$PGDATA_DIR/PG_VERSION" ]; then
  mkdir -p "$PGDATA_DIR"
  chmod 700 "$PGDATA_DIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$PGDATA_DIR"
  pwfile="$CDCORE_STACK_DIR/.pg-pwfile"  # outside the (must be empty) data folder
  (umask 077; printf '%s\n' "$CDCORE_PG_PASSWORD" > "$pwfile")
  [ "$(id -u)" = 0 ] && chown postgres: "$pwfile"
  as_pg "$BIN/initdb" -D "$PGDATA_DIR" -U postgres --pwfile="$pwfile" --auth=scram-sha-256 -E UTF8 \
    >"$CDCORE_STACK_DIR/log/initdb.log" 2>&1 || { tail -20 "$CDCORE_STACK_DIR/log/initdb.log" >&2; rm -f "$pwfile"; stack_die "initdb failed"; }
  rm -f "$pwfile"
  stack_log "postgres: initialised $PGDATA_DIR"
fi

if as_pg "$BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
  stack_log "postgres already running"
else
  logfile="$PGDATA_DIR/server.log"
  t0=$SECONDS
  as_pg "$BIN/pg_ctl" -D "$PGDATA_DIR" -l "$logfile" -w -t 60 \
    -o "-c listen_addresses=$CDCORE_HOST -p $CDCORE_PG_PORT -k $PGDATA_DIR" start >/dev/null ||
    { as_pg tail -20 "$logfile" >&2 || true; stack_die "postgres did not start (log above)"; }
  stack_log "postgres started on $CDCORE_HOST:$CDCORE_PG_PORT in $((SECONDS - t0))s (data $PGDATA_DIR)"
fi

export PGPASSWORD="$CDCORE_PG_PASSWORD"
PSQL=("$BIN/psql" -h "$CDCORE_HOST" -p "$CDCORE_PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
for db in prefect mlflow; do
  if [ "$("${PSQL[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
    "${PSQL[@]}" -c "CREATE DATABASE $db"
    stack_log "postgres: created database $db"
  fi
done
