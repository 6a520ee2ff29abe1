#!/usr/bin/env bash
# Start a Prefect worker for the process pool $CDCORE_POOL against the local Prefect server. Flow runs
# are subprocesses of the worker and inherit its environment: the MLflow server, the S3 store and
# their credentials (see env.sh). Run one per machine that should execute flows (e.g. a GPU box with
# CDCORE_POOL=cdcore-gpu).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/env.sh"
stack_need prefect "pip install -e . (prefect comes with cdcore)"
export PREFECT_HOME="$CDCORE_STACK_DIR/worker"
mkdir -p "$PREFECT_HOME"
stack_start_bg worker "prefect worker start" prefect worker start --pool "$CDCORE_POOL" --type process \
  --name "cdcore-$(hostname)-$CDCORE_PREFECT_PORT"
for _ in $(seq 1 120); do
  grep -q "started!" "$CDCORE_STACK_DIR/log/worker.log" 2>/dev/null && break
  stack_alive worker || { tail -30 "$CDCORE_STACK_DIR/log/worker.log" >&2; stack_die "worker exited (log above)"; }
  sleep 0.5
done
stack_log "worker polling pool $CDCORE_POOL on $PREFECT_API_URL"
