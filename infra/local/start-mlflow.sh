#!/usr/bin/env bash
# Start the MLflow tracking server on 127.0.0.1:$CDCORE_MLFLOW_PORT: PostgreSQL backend store
# (database mlflow), artifacts proxied to s3://$CDCORE_MLFLOW_BUCKET on the S3 store.
# Needs start-postgres.sh and start-s3.sh first; pip install psycopg2-binary boto3.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
stack_secrets
stack_urls
stack_need mlflow "pip install -e . (mlflow comes with cdcore)"
# store URIs go through the environment, so the database password never shows in `ps`
export MLFLOW_BACKEND_STORE_URI="$CDCORE_PG_URL/mlflow"
export MLFLOW_ARTIFACTS_DESTINATION="s3://$CDCORE_MLFLOW_BUCKET/"
export MLFLOW_S3_ENDPOINT_URL="$CDCORE_S3_URL"
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
# MLflow's job runner (GenAI scorers) starts 7 extra processes; the pipeline does not use it
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
stack_start_bg mlflow "mlflow server" mlflow server --host "$CDCORE_HOST" --port "$CDCORE_MLFLOW_PORT" --workers 1
stack_wait_http mlflow "$CDCORE_MLFLOW_URL/health" "${CDCORE_START_TIMEOUT:-120}"
