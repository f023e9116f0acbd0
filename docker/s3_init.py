"""One-shot `s3-init` service of docker-compose.yml: creates the buckets of the S3 artifact and model roots.

The buckets are those named by ``AIRFLOW__INVOKEAI__ARTIFACT_ROOT`` and ``AIRFLOW__INVOKEAI__MODEL_ROOT``
(``s3://bucket/prefix``); the endpoint and credentials are those of the connection the workers use,
``AIRFLOW_CONN_<[invokeai] s3_conn_id>`` (Airflow's JSON form: login, password, extra.endpoint_url,
extra.region_name), so a bad connection shows up here, before any task. A root naming another connection
(``s3://CONN_ID@bucket/``) or a ``file://`` root is left alone.

Each bucket is created when missing, then an object is written and deleted: SeaweedFS answers before its
first volume has grown, and the first write waits for that. Exits 0 once every bucket takes writes, 1 when
that did not happen within ``INVOKEAI_S3_INIT_TIMEOUT`` seconds (default 180).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlparse

ROOT_OPTIONS = ("AIRFLOW__INVOKEAI__ARTIFACT_ROOT", "AIRFLOW__INVOKEAI__MODEL_ROOT")
PROBE_KEY = ".s3-init-probe"
# answers that waiting does not change: wrong key id or secret
FATAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidBucketName"}


def conn_id() -> str:
    return os.environ.get("AIRFLOW__INVOKEAI__S3_CONN_ID") or "invokeai_s3"


def connection() -> dict[str, Any]:
    name = f"AIRFLOW_CONN_{conn_id().upper()}"
    raw = os.environ.get(name)
    if not raw:
        raise SystemExit(f"s3-init: {name} is not set")
    try:
        conn = json.loads(raw)
    except ValueError as exc:
        raise SystemExit(f"s3-init: {name} is not JSON: {exc}") from None
    extra = conn.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra)
    return {"endpoint_url": extra.get("endpoint_url"), "region_name": extra.get("region_name") or "us-east-1",
            "aws_access_key_id": conn.get("login"), "aws_secret_access_key": conn.get("password")}


def buckets() -> list[str]:
    names: list[str] = []
    for option in ROOT_OPTIONS:
        uri = urlparse(os.environ.get(option, ""))
        if uri.scheme != "s3":
            print(f"s3-init: {option} is not an s3:// root; nothing to create for it", flush=True)
            continue
        named, _, bucket = uri.netloc.rpartition("@")
        if named and named != conn_id():
            print(f"s3-init: {option} uses connection {named!r}; its bucket is not created here", flush=True)
            continue
        if bucket and bucket not in names:
            names.append(bucket)
    return names


def ensure(client: Any, bucket: str) -> None:
    existing = {entry["Name"] for entry in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key=PROBE_KEY, Body=b"")
    client.delete_object(Bucket=bucket, Key=PROBE_KEY)


def main() -> int:
    import boto3
    from botocore.config import Config

    settings = connection()
    client = boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 3},
                                              connect_timeout=5, read_timeout=30), **settings)
    deadline = time.monotonic() + float(os.environ.get("INVOKEAI_S3_INIT_TIMEOUT", "180"))
    for bucket in buckets():
        while True:
            try:
                ensure(client, bucket)
                print(f"s3-init: bucket {bucket} ready at {settings['endpoint_url']}", flush=True)
                break
            except Exception as exc:  # noqa: BLE001 - the server may still be starting
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code in FATAL_CODES or time.monotonic() > deadline:
                    print(f"s3-init: bucket {bucket} not ready: {exc}", file=sys.stderr, flush=True)
                    return 1
                time.sleep(1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
