"""Artifact store: where images, tensors and conditioning live between nodes and after a run.

Layout (ARCHITECTURE §3): ``<root>/<tenant>/runs/<dag_id>/<run_id>/{images,tensors,conditioning}/<name>``;
each image's record lives in its tenant's library (`invokeai_provider.storage.library`), one small object per
image (S3 has no append). Writes are atomic (a reader never sees half an object under its final key) and names are deterministic, so a retried
task overwrites what its first try wrote instead of adding to it. Backends: a local directory here, S3 in
`invokeai_provider.storage.s3`, both with the same contract.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional
from urllib.parse import unquote, urlparse

from invokeai_provider.config import settings
from invokeai_provider.errors import ArtifactNotFoundError, InvalidArtifactKeyError

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+@:-]*$")


def safe_segment(value: str) -> str:
    """A path segment made from an arbitrary id (node ids, run ids): unsafe characters become '_'."""
    cleaned = re.sub(r"[^A-Za-z0-9._=+@:-]", "_", value).lstrip(".") or "_"
    return cleaned[:200]


def check_key(key: str) -> str:
    """Refuses keys that could escape their prefix: absolute paths, '..', empty or odd segments."""
    if not key or key.startswith("/") or "\\" in key:
        raise InvalidArtifactKeyError(f"artifact key {key!r} must be a relative path with '/' separators")
    for part in key.split("/"):
        if not _SEGMENT.match(part):
            raise InvalidArtifactKeyError(f"artifact key {key!r} has an invalid segment {part!r}")
    return key


def tenant_segment(tenant: str) -> str:
    """The tenant as the first segment of its keys (the Airflow side checks tenants fully, `execution.tenants`)."""
    if not tenant or "/" in tenant:
        raise InvalidArtifactKeyError(f"tenant {tenant!r} must be a single path segment")
    return check_key(tenant)


class ArtifactBackend(ABC):
    """Bytes and files under keys (``check_key``-safe relative paths below the backend's root)."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Writes atomically: the object appears under ``key`` whole or not at all."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; ArtifactNotFoundError (naming its URI) when there is none."""

    @abstractmethod
    def upload_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        """Stores a (possibly large) local file under ``key``, streamed; atomic like `write_bytes`."""

    @abstractmethod
    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        """Copies the object to ``local_path``, streamed; the file appears there whole or not at all."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Removes the object; deleting a missing key is not an error."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys below the folder ``prefix`` ('' for all), relative to the backend's root, sorted."""

    @abstractmethod
    def folders(self, prefix: str) -> list[str]:
        """The names of the folders directly below ``prefix`` ('' for the root), sorted (the tenants of a root)."""

    @abstractmethod
    def list_versions(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, version) below ``prefix``, sorted, as `list`; the version changes whenever the object is written
        (an ETag, a modification time and size), so a reader can tell what changed without reading objects."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """The object's identity (``file:///...`` or ``s3://bucket/...``), for records and messages."""

    @abstractmethod
    def url(self, key: str, expires_in: Optional[int] = None) -> str:
        """A URL a client can fetch the object from: the file URI locally, a presigned GET on S3."""


def atomic_write(destination: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write`` fills a temporary file beside ``destination``, which is then renamed into place: a reader (or a
    crash) never sees half a file under its final name."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, destination)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_copy(source: Path, destination: Path) -> None:
    def copy(out: BinaryIO) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, out, 8 << 20)

    atomic_write(destination, copy)


class LocalArtifactBackend(ArtifactBackend):
    """A directory on a local or shared filesystem (``file:///path``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        atomic_write(self._path(key), lambda out: out.write(data))

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact at {self.uri(key)}") from None

    def upload_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        _atomic_copy(Path(local_path), self._path(key))

    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        source = self._path(key)
        if not source.is_file():
            raise ArtifactNotFoundError(f"no artifact at {self.uri(key)}")
        _atomic_copy(source, Path(local_path))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root / check_key(prefix.rstrip("/")) if prefix else self.root
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith(".tmp-"):
                yield path.relative_to(self.root).as_posix()

    def folders(self, prefix: str) -> list[str]:
        base = self.root / check_key(prefix.rstrip("/")) if prefix else self.root
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def list_versions(self, prefix: str) -> Iterator[tuple[str, str]]:
        for key in self.list(prefix):
            try:
                stat = (self.root / key).stat()
            except FileNotFoundError:  # deleted since it was listed
                continue
            yield key, f"{stat.st_mtime_ns}-{stat.st_size}"

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()

    def url(self, key: str, expires_in: Optional[int] = None) -> str:
        """The file URI: a local store has nothing to sign and nothing expires."""
        return self._path(key).as_uri()


def backend_for_uri(uri: str) -> ArtifactBackend:
    """``file:///abs/path``, a plain path, or ``s3://[CONN_ID@]bucket/prefix`` (credentials from an Airflow
    connection, `invokeai_provider.storage.s3`)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else uri
        return LocalArtifactBackend(path)
    if parsed.scheme == "s3":
        from invokeai_provider.storage.s3 import S3ArtifactBackend  # boto3 and Airflow's SDK only when S3 is used

        return S3ArtifactBackend.from_uri(uri)
    raise ValueError(f"artifact root {uri!r}: unsupported scheme {parsed.scheme!r} (expected file:// or s3://)")


class RunStore:
    """One run's place in the store: ``<tenant>/runs/<dag_id>/<run_id>/``."""

    KINDS = ("images", "tensors", "conditioning")

    def __init__(self, backend: ArtifactBackend, *, tenant: Optional[str] = None, dag_id: str = "adhoc",
                 run_id: str = "run") -> None:
        """``tenant`` None: the configured ``[invokeai] default_tenant``."""
        self.backend = backend
        if tenant is None:
            tenant = settings().default_tenant
        self.tenant = tenant_segment(tenant)
        self.dag_id, self.run_id = dag_id, run_id
        self.prefix = "/".join([self.tenant, "runs", safe_segment(dag_id), safe_segment(run_id)])

    def key(self, kind: str, name: str) -> str:
        if kind not in self.KINDS:
            raise ValueError(f"unknown artifact kind {kind!r}")
        if "/" in name or name in ("", ".", ".."):
            raise InvalidArtifactKeyError(f"artifact name {name!r} must be a single path segment")
        return check_key(f"{self.prefix}/{kind}/{name}")

    def write(self, kind: str, name: str, data: bytes) -> str:
        key = self.key(kind, name)
        self.backend.write_bytes(key, data)
        return key

    def read(self, kind: str, name: str) -> bytes:
        return self.backend.read_bytes(self.key(kind, name))

    def exists(self, kind: str, name: str) -> bool:
        return self.backend.exists(self.key(kind, name))

    def uri(self, kind: str, name: str) -> str:
        return self.backend.uri(self.key(kind, name))

    def url(self, kind: str, name: str, expires_in: Optional[int] = None) -> str:
        return self.backend.url(self.key(kind, name), expires_in)


def default_artifact_root() -> str:
    """``[invokeai] artifact_root`` (env ``AIRFLOW__INVOKEAI__ARTIFACT_ROOT``), else ./artifacts."""
    return settings().artifact_root


def open_run_store(uri: Optional[str] = None, **kwargs: str) -> RunStore:
    return RunStore(backend_for_uri(uri or default_artifact_root()), **kwargs)
