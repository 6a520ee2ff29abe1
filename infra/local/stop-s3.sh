#!/usr/bin/env bash
# Stop the S3 stand-in started by start-s3.sh (TERM, wait, KILL).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
stack_stop_bg s3
