#!/usr/bin/env bash
# Stop the worker started by start-worker.sh (TERM, wait, KILL: it does not always stop on TERM, P12).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
stack_stop_bg worker
