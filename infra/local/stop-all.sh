#!/usr/bin/env bash
# Stop everything start-all.sh started, in reverse order. Data stays in $CDCORE_STACK_DIR (S3 objects
# excepted: the moto store is in memory); remove that folder for a clean slate.
set -uo pipefail
here=$(dirname "$0")
status=0
for s in worker prefect mlflow s3 postgres; do "$here/stop-$s.sh" || status=1; done
exit $status
