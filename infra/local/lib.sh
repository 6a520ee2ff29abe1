# Shared settings and helpers of the local (no-Docker) stack. Sourced by the start/stop scripts and
# by env.sh; it sets no shell options, so sourcing it into an interactive shell is harmless.
#
# Everything binds to 127.0.0.1. State (databases, logs, PID files, generated credentials) lives in
# $CDCORE_STACK_DIR (default <repo>/.cache/stack, git-ignored). Override any port with its variable.

CDCORE_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: "${CDCORE_STACK_DIR:=$CDCORE_REPO/.cache/stack}"
: "${CDCORE_HOST:=127.0.0.1}"
: "${CDCORE_PG_PORT:=5433}"
: "${CDCORE_S3_PORT:=5555}"
: "${CDCORE_MLFLOW_PORT:=5000}"
: "${CDCORE_PREFECT_PORT:=4200}"
: "${CDCORE_MLFLOW_BUCKET:=cdcore-mlflow}"
: "${CDCORE_DVC_BUCKET:=cdcore-dvc}"
: "${CDCORE_POOL:=cdcore-process}"
: "${CDCORE_STOP_GRACE:=5}"
: "${PYTHON:=python}"
export CDCORE_STACK_DIR CDCORE_HOST CDCORE_PG_PORT CDCORE_S3_PORT CDCORE_MLFLOW_PORT CDCORE_PREFECT_PORT \
  CDCORE_MLFLOW_BUCKET CDCORE_DVC_BUCKET CDCORE_POOL

stack_log() { printf '[cdcore-stack] %s\n' "$*" >&2; }
stack_die() { stack_log "error: $*"; exit 1; }

stack_pg_bin() {
  # the newest PostgreSQL server binaries (Debian: /usr/lib/postgresql/<major>/bin)
  if [ -n "${CDCORE_PG_BIN:-}" ]; then echo "$CDCORE_PG_BIN"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

stack_init_dir() {
  mkdir -p "$CDCORE_STACK_DIR/run" "$CDCORE_STACK_DIR/log"
  # others may traverse (the postgres user reaches its data folder) but not list or read
  chmod 711 "$CDCORE_STACK_DIR"
  chmod 700 "$CDCORE_STACK_DIR/run" "$CDCORE_STACK_DIR/log"
}

stack_random() { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

stack_secrets() {
  # Credentials come from the environment; any not set are generated once into secrets.env (mode 600).
  local f="$CDCORE_STACK_DIR/secrets.env"
  stack_init_dir
  if [ ! -f "$f" ]; then
    (umask 077
     {
       echo "CDCORE_PG_PASSWORD=${CDCORE_PG_PASSWORD:-$(stack_random)}"
       echo "AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-cdcore$(stack_random | cut -c1-14)}"
       echo "AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-$(stack_random)}"
     } > "$f")
  fi
  set -a
  # shellcheck disable=SC1090
  . "$f"
  set +a
  export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
}

stack_urls() {
  export CDCORE_S3_URL="http://$CDCORE_HOST:$CDCORE_S3_PORT"
  export CDCORE_MLFLOW_URL="http://$CDCORE_HOST:$CDCORE_MLFLOW_PORT"
  export CDCORE_PREFECT_API="http://$CDCORE_HOST:$CDCORE_PREFECT_PORT/api"
  export CDCORE_PG_URL="postgresql://postgres:${CDCORE_PG_PASSWORD}@$CDCORE_HOST:$CDCORE_PG_PORT"
}

stack_pid() { cat "$CDCORE_STACK_DIR/run/$1.pid" 2>/dev/null || true; }

stack_alive() {
  # alive and still the process we started (its command line contains the marker we recorded)
  local name=$1 pid marker
  pid=$(stack_pid "$name")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  marker=$(cat "$CDCORE_STACK_DIR/run/$name.marker" 2>/dev/null || true)
  [ -z "$marker" ] || tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$marker"
}

stack_start_bg() {
  # stack_start_bg NAME MARKER CMD...: start CMD in its own session (PID = process group), record the PID
  local name=$1 marker=$2
  shift 2
  if stack_alive "$name"; then
    stack_log "$name already running (pid $(stack_pid "$name"))"
    return 0
  fi
  stack_init_dir
  setsid "$@" >"$CDCORE_STACK_DIR/log/$name.log" 2>&1 < /dev/null &
  echo $! > "$CDCORE_STACK_DIR/run/$name.pid"
  echo "$marker" > "$CDCORE_STACK_DIR/run/$name.marker"
  stack_log "$name started (pid $!, log $CDCORE_STACK_DIR/log/$name.log)"
}

stack_wait_http() {
  # stack_wait_http NAME URL TIMEOUT_S: wait until URL answers 2xx, or fail with the log's tail
  local name=$1 url=$2 timeout=${3:-60} t0=$SECONDS
  while ! "$PYTHON" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url" 2>/dev/null; do
    if ! stack_alive "$name"; then
      tail -n 30 "$CDCORE_STACK_DIR/log/$name.log" >&2 || true
      stack_die "$name exited before answering on $url (log above)"
    fi
    if [ $((SECONDS - t0)) -ge "$timeout" ]; then
      tail -n 30 "$CDCORE_STACK_DIR/log/$name.log" >&2 || true
      stack_die "$name did not answer on $url within ${timeout}s (log above)"
    fi
    sleep 0.5
  done
  stack_log "$name healthy on $url after $((SECONDS - t0))s"
}

stack_stop_bg() {
  # TERM the recorded process group, wait up to CDCORE_STOP_GRACE s, then KILL it (pitfall P12)
  local name=$1 pid target i
  pid=$(stack_pid "$name")
  if [ -z "$pid" ]; then stack_log "$name: not started here (no PID file)"; return 0; fi
  if ! stack_alive "$name"; then
    stack_log "$name: pid $pid not running (stale PID file removed)"
    rm -f "$CDCORE_STACK_DIR/run/$name.pid" "$CDCORE_STACK_DIR/run/$name.marker"
    return 0
  fi
  target=$pid
  if [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ]; then target=-$pid; fi  # the whole group we started
  kill -TERM -- "$target" 2>/dev/null || true
  for ((i = 0; i < CDCORE_STOP_GRACE * 10; i++)); do
    kill -0 -- "$target" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 -- "$target" 2>/dev/null; then
    stack_log "$name: still running after ${CDCORE_STOP_GRACE}s, sending KILL"
    kill -KILL -- "$target" 2>/dev/null || true
  fi
  rm -f "$CDCORE_STACK_DIR/run/$name.pid" "$CDCORE_STACK_DIR/run/$name.marker"
  stack_log "$name stopped"
}

stack_need() { command -v "$1" >/dev/null 2>&1 || stack_die "$1 not found on PATH ($2)"; }
