#!/usr/bin/env bash
# Start an S3-compatible store on 127.0.0.1:$CDCORE_S3_PORT and create the MLflow and DVC buckets.
# It is moto's server (pip install "moto[server]"): in memory, a stand-in for MinIO/S3 where no
# MinIO binary can be installed; objects are lost when it stops.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
stack_secrets
stack_urls
stack_need moto_server 'pip install "moto[server]"'
stack_start_bg s3 moto_server moto_server -H "$CDCORE_HOST" -p "$CDCORE_S3_PORT"
stack_wait_http s3 "$CDCORE_S3_URL/moto-api/" 30
"$PYTHON" - "$CDCORE_S3_URL" "$CDCORE_MLFLOW_BUCKET" "$CDCORE_DVC_BUCKET" <<'PY'
import sys
import boto3

url, *buckets = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=url)
have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
for b in buckets:
    if b not in have:
        s3.create_bucket(Bucket=b)
        print(f"[cdcore-stack] s3: created bucket {b}", file=sys.stderr)
PY
