#!/usr/bin/env bash
# Stop the MLflow server started by start-mlflow.sh (TERM the process group, wait, KILL).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
stack_stop_bg mlflow
