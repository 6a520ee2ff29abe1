#!/usr/bin/env bash
# Show which parts of the local stack are running.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
for s in s3 mlflow prefect worker; do
  if stack_alive "$s"; then echo "$s: running (pid $(stack_pid "$s"))"; else echo "$s: stopped"; fi
done
if [ -f "$CDCORE_STACK_DIR/pg/postmaster.pid" ]; then echo "postgres: running (pid $(head -1 "$CDCORE_STACK_DIR/pg/postmaster.pid"))"; else echo "postgres: stopped"; fi
