"""Artifact store: where images, tensors and conditioning live between nodes and after a run.

Layout (ARCHITECTURE §3): ``<root>/<tenant>/runs/<dag_id>/<run_id>/{images,tensors,conditioning}/<name>``
plus ``manifest.jsonl`` per run. Writes are atomic (a reader never sees half an object under its final key)
and names are deterministic, so a retried task overwrites what its first try wrote instead of adding to it.
The backend interface is byte-oriented so an S3 backend can implement it with the same semantics.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import unquote, urlparse

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


class ArtifactBackend(ABC):
    """Bytes under keys. Implementations: a local directory now; S3 comes later with the same contract."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Writes atomically: the object appears under ``key`` whole or not at all."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]: ...

    @abstractmethod
    def append_line(self, key: str, line: str) -> None:
        """Appends one line (the run manifest); each line lands whole."""

    @abstractmethod
    def uri(self, key: str) -> str: ...


class LocalArtifactBackend(ArtifactBackend):
    """A directory on a local or shared filesystem (``file:///path``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._append_lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact at {self.uri(key)}") from None

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

    def append_line(self, key: str, line: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = (line.rstrip("\n") + "\n").encode()
        with self._append_lock:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, payload)
            finally:
                os.close(fd)

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()


def backend_for_uri(uri: str) -> ArtifactBackend:
    """``file:///abs/path`` or a plain path; other schemes belong to backends added later."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else uri
        return LocalArtifactBackend(path)
    raise ValueError(f"artifact root {uri!r}: unsupported scheme {parsed.scheme!r} (expected file://)")


class RunStore:
    """One run's place in the store: ``<tenant>/runs/<dag_id>/<run_id>/``."""

    KINDS = ("images", "tensors", "conditioning")

    def __init__(self, backend: ArtifactBackend, *, tenant: str = "default", dag_id: str = "adhoc",
                 run_id: str = "run") -> None:
        self.backend = backend
        if not tenant or "/" in tenant:
            raise InvalidArtifactKeyError(f"tenant {tenant!r} must be a single path segment")
        self.tenant = check_key(tenant)
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

    def record(self, entry: dict[str, Any]) -> None:
        """Adds one line to the run's manifest.jsonl."""
        self.backend.append_line(f"{self.prefix}/manifest.jsonl", json.dumps(entry, sort_keys=True, default=str))

    def manifest(self) -> list[dict[str, Any]]:
        key = f"{self.prefix}/manifest.jsonl"
        if not self.backend.exists(key):
            return []
        return [json.loads(line) for line in self.backend.read_bytes(key).decode().splitlines() if line.strip()]


def default_artifact_root() -> str:
    """``[invokeai] artifact_root`` (env ``AIRFLOW__INVOKEAI__ARTIFACT_ROOT``), else ./artifacts."""
    from invokeai_provider.config import get_option

    return get_option("artifact_root") or Path("artifacts").resolve().as_uri()


def open_run_store(uri: Optional[str] = None, **kwargs: str) -> RunStore:
    return RunStore(backend_for_uri(uri or default_artifact_root()), **kwargs)
