#!/usr/bin/env bash
# Start the whole local stack on 127.0.0.1: PostgreSQL, the S3 store, MLflow, Prefect server, a worker.
# Then:  . infra/local/env.sh   (points cdcore, dvc and mlflow at it);  stop with infra/local/stop-all.sh
set -euo pipefail
here=$(dirname "$0")
"$here/start-postgres.sh"
"$here/start-s3.sh"
"$here/start-mlflow.sh"
"$here/start-prefect.sh"
"$here/start-worker.sh"
. "$here/env.sh"
stack_log "ready: Prefect $CDCORE_PREFECT_API, MLflow $CDCORE_MLFLOW_URL, S3 $CDCORE_S3_URL, PostgreSQL $CDCORE_HOST:$CDCORE_PG_PORT"
