# Point the current shell (or a script) at the local stack:   . infra/local/env.sh
# Exports, for each part of the stack that is running, what clients (cdcore run, dvc, mlflow, prefect
# workers) need: the Prefect API, the MLflow server, the S3 endpoint and its credentials (from
# $CDCORE_STACK_DIR/secrets.env). Parts that are not running leave your settings as they are.
# shellcheck disable=SC1091
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
stack_secrets
stack_urls
export PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true DVC_NO_ANALYTICS=1
if stack_alive prefect; then export PREFECT_API_URL="$CDCORE_PREFECT_API"; fi
if stack_alive mlflow; then export MLFLOW_TRACKING_URI="$CDCORE_MLFLOW_URL"; fi
if stack_alive s3; then
  export MLFLOW_S3_ENDPOINT_URL="$CDCORE_S3_URL"   # for clients that write to S3 directly
  export AWS_ENDPOINT_URL_S3="$CDCORE_S3_URL"       # boto3 and dvc-s3 pick this up
fi
