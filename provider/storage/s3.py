"""The S3 artifact backend (AWS S3, MinIO, SeaweedFS) through boto3, configured from an Airflow connection.

``s3://bucket/prefix`` uses the connection named by ``[invokeai] s3_conn_id``; ``s3://CONN_ID@bucket/prefix``
names one (common-io's convention). The connection holds the key id (login), the secret (password) and the
extras ``endpoint_url`` / ``region_name``, the names of the amazon provider's ``aws`` connection, so either
type works. It is looked up through Airflow's task SDK, which asks the Execution API inside a task and reads
``AIRFLOW_CONN_<ID>`` (and configured secrets backends) in any other process. Without such a connection,
boto3's default chain (``AWS_*`` environment, config files, instance role) applies.

Semantics match the local backend: a PutObject is atomic; a multipart upload becomes visible only when
completed, and a failed one is aborted so no parts linger; downloads land through a temporary file.
Transient failures (unreachable endpoint, dropped connections, timeouts, 5xx, SlowDown) are retried with
exponential backoff and jitter for ``[invokeai] s3_retry_seconds``, on top of botocore's own retries.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar
from urllib.parse import urlparse

from airflow.sdk import BaseHook

from invokeai_provider.config import settings as provider_settings
from invokeai_provider.errors import ArtifactNotFoundError, ArtifactStoreUnavailableError
from invokeai_provider.storage.base import ArtifactBackend, atomic_write, check_key

log = logging.getLogger(__name__)

CONN_TYPE = "invokeai_s3"
MAX_PRESIGN_SECONDS = 604800  # SigV4 presigned URLs live at most 7 days
MIN_PART_MB = 5  # S3's smallest multipart part (except the last)
MIB = 1024 * 1024
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling",
                    "ThrottlingException", "RequestLimitExceeded"}
_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}
_FIRST_DELAY_S, _MAX_DELAY_S = 0.5, 10.0

T = TypeVar("T")


# --- connection -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Settings:
    """What a client is built from: one Airflow connection's fields, or nothing (boto3's default chain)."""

    conn_id: str
    endpoint_url: Optional[str] = None
    region_name: Optional[str] = None
    access_key_id: Optional[str] = None
    secret_access_key: Optional[str] = field(default=None, repr=False)
    session_token: Optional[str] = field(default=None, repr=False)
    from_connection: bool = False

    def cache_key(self) -> tuple[Any, ...]:
        """Clients are shared per connection and endpoint; the credentials' digest keeps a rotated secret
        from reusing a client built with the old one."""
        secret = hashlib.sha256(f"{self.secret_access_key}\0{self.session_token}".encode()).hexdigest()
        return self.conn_id, self.endpoint_url, self.region_name, self.access_key_id, secret


def connection_settings(conn_id: str) -> S3Settings:
    """Reads connection ``conn_id`` through the task SDK (Execution API in a task, env/secrets elsewhere)."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        log.info("no Airflow connection %r: S3 credentials, region and endpoint come from boto3's default chain "
                 "(AWS_* environment, config files, instance role)", conn_id)
        return S3Settings(conn_id)
    extra = conn.extra_dejson
    service = (extra.get("service_config") or {}).get("s3") or {}  # the aws connection's per-service override
    return S3Settings(
        conn_id,
        endpoint_url=service.get("endpoint_url") or extra.get("endpoint_url") or None,
        region_name=extra.get("region_name") or None,
        access_key_id=conn.login or None,
        secret_access_key=conn.password or None,
        session_token=extra.get("aws_session_token") or None,
        from_connection=True,
    )


_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def s3_client(settings: S3Settings) -> Any:
    """A boto3 S3 client for ``settings``, built once per process (clients are thread-safe, sessions not)."""
    key = settings.cache_key()
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=10, read_timeout=60, signature_version="s3v4", max_pool_connections=16,
                # S3-compatible servers (MinIO, SeaweedFS, Ceph) do not all accept the newer default checksums
                request_checksum_calculation="when_required", response_checksum_validation="when_required",
            )
            session = boto3.session.Session(aws_access_key_id=settings.access_key_id,
                                            aws_secret_access_key=settings.secret_access_key,
                                            aws_session_token=settings.session_token,
                                            region_name=settings.region_name)
            client = _clients[key] = session.client("s3", endpoint_url=settings.endpoint_url, config=config)
            log.debug("S3 client for connection %r (endpoint %s)", settings.conn_id,
                      settings.endpoint_url or "AWS default")
    return client


# --- transient errors -------------------------------------------------------------------------------


def _error_code(exc: BaseException) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    return (str(response.get("Error", {}).get("Code", "")),
            int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0))


def _is_not_found(exc: BaseException) -> bool:
    code, status = _error_code(exc)
    return code in _NOT_FOUND_CODES or status == 404


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the endpoint unreachable, a dropped or timed-out connection, a 5xx or SlowDown."""
    from boto3.exceptions import RetriesExceededError, S3UploadFailedError
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError,
                        ResponseStreamingError, IncompleteReadError)):
        return True
    if isinstance(exc, ClientError):
        code, status = _error_code(exc)
        return status >= 500 or code in _TRANSIENT_CODES
    if isinstance(exc, RetriesExceededError):  # s3transfer gave up on a download's socket errors
        return exc.last_exception is not None and is_transient(exc.last_exception)
    if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:  # boto3 wraps ClientError
        return is_transient(exc.__context__)
    return False


# --- backend ----------------------------------------------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[Optional[str], str, str]:
    """``s3://[CONN_ID@]bucket[/prefix]`` -> (conn id or None, bucket, prefix without slashes)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise ValueError(f"{uri!r} is not an s3:// URI")
    conn_id, _, bucket = parsed.netloc.rpartition("@")
    if not _BUCKET.match(bucket):
        raise ValueError(f"S3 URI {uri!r}: bucket {bucket!r} must be 3-63 characters of lowercase letters, digits, "
                         "'.' and '-' (expected s3://[CONN_ID@]bucket/prefix)")
    prefix = parsed.path.strip("/")
    if prefix:
        check_key(prefix)
    return conn_id or None, bucket, prefix


class S3ArtifactBackend(ArtifactBackend):
    """Objects under ``s3://bucket/prefix/``; keys are checked like the local backend's."""

    def __init__(self, bucket: str, prefix: str = "", *, conn_id: Optional[str] = None,
                 retry_seconds: Optional[float] = None, multipart_threshold_mb: Optional[int] = None,
                 presign_expiry_seconds: Optional[int] = None) -> None:
        if not _BUCKET.match(bucket):
            raise ValueError(f"S3 bucket {bucket!r} must be 3-63 characters of lowercase letters, digits, '.' and '-'")
        self.bucket = bucket
        self.prefix = check_key(prefix.strip("/")) if prefix.strip("/") else ""
        config = provider_settings()  # an option is read (and parsed) only where no argument overrides it
        self.conn_id = conn_id or config.s3_conn_id
        self.retry_seconds = config.s3_retry_seconds if retry_seconds is None else float(retry_seconds)
        self.multipart_threshold_mb = max(MIN_PART_MB, config.s3_multipart_threshold_mb
                                          if multipart_threshold_mb is None else int(multipart_threshold_mb))
        self.presign_expiry_seconds = _check_expiry(config.presign_expiry_seconds
                                                    if presign_expiry_seconds is None else int(presign_expiry_seconds))
        self._client: Any = None
        self._client_lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> "S3ArtifactBackend":
        conn_id, bucket, prefix = parse_s3_uri(uri)
        return cls(bucket, prefix, conn_id=conn_id, **kwargs)

    def __repr__(self) -> str:
        return f"S3ArtifactBackend(s3://{self.bucket}/{self.prefix}, conn_id={self.conn_id!r})"

    @property
    def client(self) -> Any:
        """Resolved on first use, so building a backend (or naming URIs) needs no connection."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = s3_client(connection_settings(self.conn_id))
        return self._client

    def _object_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    def _call(self, action: str, key: str, operation: Callable[[], T]) -> T:
        """Runs ``operation``, retrying transient failures with exponential backoff and jitter until the
        retry window closes."""
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                return operation()
            except Exception as exc:
                if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
                    raise ArtifactStoreUnavailableError(
                        f"S3 {action} of {self.uri(key)}: no credentials; define the Airflow connection "
                        f"{self.conn_id!r} (e.g. AIRFLOW_CONN_{self.conn_id.upper()}) or AWS_* variables") from exc
                if not is_transient(exc):
                    raise
                attempt += 1
                elapsed = time.monotonic() - start
                delay = min(_MAX_DELAY_S, _FIRST_DELAY_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                if elapsed + delay > self.retry_seconds:
                    raise ArtifactStoreUnavailableError(
                        f"S3 {action} of {self.uri(key)} failed {attempt} times in {elapsed:.0f} s "
                        f"([invokeai] s3_retry_seconds = {self.retry_seconds:g}); last error: "
                        f"{type(exc).__name__}: {exc}") from exc
                log.warning("S3 %s of %s failed (%s: %s); retry %d in %.1f s", action, self.uri(key),
                            type(exc).__name__, exc, attempt, delay)
                time.sleep(delay)

    def write_bytes(self, key: str, data: bytes) -> None:
        object_key = self._object_key(key)
        self._call("write", key, lambda: self.client.put_object(Bucket=self.bucket, Key=object_key, Body=data,
                                                                 ContentType=_content_type(key)))

    def read_bytes(self, key: str) -> bytes:
        object_key = self._object_key(key)

        def read() -> bytes:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=object_key)
            except Exception as exc:
                if _is_not_found(exc):
                    raise ArtifactNotFoundError(f"no artifact at {self.uri(key)}") from None
                raise
            with response["Body"] as body:
                return body.read()

        return self._call("read", key, read)

    def exists(self, key: str) -> bool:
        object_key = self._object_key(key)

        def head() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=object_key)
            except Exception as exc:
                if _is_not_found(exc):
                    return False
                raise
            return True

        return self._call("exists", key, head)

    def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=object_key))

    def list(self, prefix: str) -> Iterator[str]:
        yield from (key for key, _ in self.list_versions(prefix))

    def _listed_folder(self, prefix: str) -> tuple[str, str]:
        """(the backend's root in the bucket, the object-key folder of ``prefix`` below it), for listings."""
        root = f"{self.prefix}/" if self.prefix else ""
        return root, f"{root}{check_key(prefix.rstrip('/'))}/" if prefix else root

    def folders(self, prefix: str) -> list[str]:
        _, folder = self._listed_folder(prefix)

        def names() -> list[str]:
            found = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder,
                                                                              Delimiter="/"):
                found.extend(entry["Prefix"][len(folder):].rstrip("/") for entry in page.get("CommonPrefixes", []))
            return sorted(found)

        return self._call("list", prefix.rstrip("/") or ".", names)

    def list_versions(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, ETag) below ``prefix``, sorted: one listing request per 1,000 keys, no object read."""
        root, folder = self._listed_folder(prefix)

        def entries() -> list[tuple[str, str]]:
            found = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
                found.extend((item["Key"][len(root):], str(item.get("ETag", "")).strip('"'))
                             for item in page.get("Contents", []) if not item["Key"].endswith("/"))
            return sorted(found)

        yield from self._call("list", prefix.rstrip("/") or ".", entries)

    def transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        part = self.multipart_threshold_mb * MIB
        return TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=8,
                              preferred_transfer_client="classic")

    def upload_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        """Managed (multipart above the threshold) upload; a failed one is aborted, leaving nothing behind."""
        object_key = self._object_key(key)
        path = Path(local_path)
        if not path.is_file():
            raise FileNotFoundError(f"cannot upload {path} to {self.uri(key)}: not a file")

        def upload() -> None:
            try:
                self.client.upload_file(str(path), self.bucket, object_key, Config=self.transfer_config(),
                                        ExtraArgs={"ContentType": _content_type(key)})
            except BaseException:
                self._abort_pending_uploads(object_key)
                raise

        self._call("upload", key, upload)

    def _abort_pending_uploads(self, object_key: str) -> None:
        """Aborts unfinished multipart uploads of ``object_key``. s3transfer aborts its own on failure; this
        also covers an abort that failed and the leftovers of an earlier try that was killed. Keys are
        deterministic per task, so a pending upload of this key belongs to this task's tries."""
        try:
            listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=object_key)
            for upload in listing.get("Uploads", []):
                if upload["Key"] == object_key:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload["UploadId"])
                    log.info("aborted unfinished multipart upload %s of s3://%s/%s", upload["UploadId"], self.bucket,
                             object_key)
        except Exception as exc:  # noqa: BLE001 - best effort; the upload's own error is the one to report
            log.warning("could not abort unfinished multipart uploads of s3://%s/%s: %s", self.bucket, object_key, exc)

    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        """Managed (ranged, parallel) download through a temporary file beside ``local_path``."""
        object_key = self._object_key(key)
        destination = Path(local_path)
        destination.parent.mkdir(parents=True, exist_ok=True)

        def download() -> None:
            try:
                atomic_write(destination, lambda handle: self.client.download_fileobj(
                    self.bucket, object_key, handle, Config=self.transfer_config()))
            except Exception as exc:
                if _is_not_found(exc):
                    raise ArtifactNotFoundError(f"no artifact at {self.uri(key)}") from None
                raise

        self._call("download", key, download)

    def url(self, key: str, expires_in: Optional[int] = None) -> str:
        """A presigned GET URL (signed locally, no request), valid ``expires_in`` seconds (default
        ``[invokeai] presign_expiry_seconds``)."""
        seconds = self.presign_expiry_seconds if expires_in is None else _check_expiry(expires_in)
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket,
                                                                        "Key": self._object_key(key)},
                                                  ExpiresIn=seconds)


def _check_expiry(seconds: int) -> int:
    if not 1 <= seconds <= MAX_PRESIGN_SECONDS:
        raise ValueError(f"presigned URL lifetime {seconds} s: expected 1 to {MAX_PRESIGN_SECONDS} s (7 days, the "
                         "SigV4 maximum)")
    return seconds


def _content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


__all__ = ["S3ArtifactBackend", "S3Settings", "connection_settings", "is_transient",
           "parse_s3_uri", "s3_client"]
