#!/usr/bin/env bash
# Stop the Prefect server started by start-prefect.sh (TERM the process group, wait, KILL).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
stack_stop_bg prefect
