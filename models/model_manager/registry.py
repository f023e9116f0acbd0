"""The model registry: one JSON record per model, kept in the model root beside the model files.

Every worker that sees the model root sees the same registry, without touching Airflow's database.
Layout: ``<root>/records/<key>.json`` and, for installed (copied) models, ``<root>/files/<key>/<name>``.
Records are written atomically through the same byte backend the artifact store uses.

A local root (``file://``) is read in place. A remote root (``s3://`` and any other non-local backend) keeps
the same layout as objects; a worker uses a model's files through the host-local disk cache
(``[invokeai] model_cache_dir``), which fetches them once per host and keeps them while they are read.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional

from invokeai_provider.errors import ArtifactNotFoundError, InvalidArtifactKeyError, InvokeAIProviderError
from invokeai_provider.models.model_manager.configs import ModelConfig
from invokeai_provider.storage.base import ArtifactBackend, LocalArtifactBackend, backend_for_uri, safe_segment

if TYPE_CHECKING:
    from invokeai_provider.models.model_manager.disk_cache import DiskCache

RECORDS = "records"
FILES = "files"


class UnknownModelError(InvokeAIProviderError):
    """No registered model matches a key, name, hash or identifier."""


class AmbiguousModelError(InvokeAIProviderError):
    """A name matches several registered models."""


class ModelFilesError(InvokeAIProviderError):
    """A registered model's files are missing or do not match its record."""


def default_model_root() -> str:
    """``[invokeai] model_root`` (env ``AIRFLOW__INVOKEAI__MODEL_ROOT``), else ./invokeai-models."""
    from invokeai_provider.config import settings

    return settings().model_root


def default_model_cache_dir() -> Path:
    """``[invokeai] model_cache_dir`` (a path or file:// URI), else ~/.cache/invokeai-airflow/models."""
    from invokeai_provider.config import settings

    return settings().model_cache_dir


def default_model_cache_bytes() -> int:
    """``[invokeai] model_cache_gb`` in bytes (GiB; default 200)."""
    from invokeai_provider.config import settings

    return settings().model_cache_bytes


@dataclass(frozen=True)
class LocalModel:
    """A model's files on this host: its file or folder, and its ``--config`` folder when it has one."""

    path: Path
    config_path: Optional[Path]


class ModelRegistry:
    def __init__(self, root: str | ArtifactBackend | None = None, *, cache_dir: str | os.PathLike[str] | None = None,
                 cache_bytes: Optional[int] = None) -> None:
        """``root``: a model root URI (default ``[invokeai] model_root``) or a backend. ``cache_dir`` and
        ``cache_bytes`` override ``[invokeai] model_cache_dir`` / ``model_cache_gb`` for a remote root."""
        if isinstance(root, ArtifactBackend):
            self.backend, self.location = root, repr(root)
        else:
            self.location = root or default_model_root()
            self.backend = backend_for_uri(self.location)
        self._local_root = self.backend.root if isinstance(self.backend, LocalArtifactBackend) else None
        self.is_remote = self._local_root is None
        if self._local_root is not None:
            self.location = str(self._local_root)
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache_bytes = cache_bytes
        self._disk_cache: Optional["DiskCache"] = None

    @property
    def root(self) -> Path:
        """The folder of a local model root (a remote root has none: use ``local_model``)."""
        if self._local_root is None:
            raise InvokeAIProviderError(f"model root {self.location} is remote: it has no local folder; its model "
                                        "files are used through the host's disk cache (ModelRegistry.local_model)")
        return self._local_root

    @property
    def work_dir(self) -> Path:
        """Where derived files (converted checkpoints, architecture configs) go: the root itself when it is
        local, else the host's disk cache folder (they are never written back to a remote root)."""
        return self._local_root if self._local_root is not None else self.disk_cache.root

    @property
    def disk_cache(self) -> "DiskCache":
        """The host-local cache of a remote root's model files (made on first use, so listing never touches it)."""
        if self._disk_cache is None:
            from invokeai_provider.models.model_manager.disk_cache import DiskCache

            self._disk_cache = DiskCache(self._cache_dir or default_model_cache_dir(),
                                         self._cache_bytes if self._cache_bytes is not None
                                         else default_model_cache_bytes())
        return self._disk_cache

    # --- records ----------------------------------------------------------------------------------

    def add(self, config: ModelConfig) -> ModelConfig:
        self.backend.write_bytes(f"{RECORDS}/{config.key}.json", config.model_dump_json(indent=2).encode())
        return config

    def remove(self, key: str) -> None:
        """Unlists the model (record first, so it is never listed without its files), then deletes the
        files it was installed with; an in-place model's files are the user's and stay."""
        config = self.get(key)
        self.backend.delete(f"{RECORDS}/{config.key}.json")
        for stored in list(self.backend.list(f"{FILES}/{config.key}/")):
            self.backend.delete(stored)

    def all(self) -> Iterator[ModelConfig]:
        for key in self.backend.list(f"{RECORDS}/"):
            if key.startswith(f"{RECORDS}/") and key.endswith(".json"):
                yield ModelConfig.model_validate_json(self.backend.read_bytes(key))

    def get(self, key: str) -> ModelConfig:
        record = f"{RECORDS}/{key}.json"
        try:
            data = self.backend.read_bytes(record) if "/" not in key else None
        except (InvalidArtifactKeyError, ArtifactNotFoundError):  # not a key (a name with spaces...), or no record
            data = None
        if data is None:
            raise UnknownModelError(f"no model with key {key!r} in {self.location}")
        return ModelConfig.model_validate_json(data)

    # --- model files ------------------------------------------------------------------------------

    def model_path(self, config: ModelConfig) -> Path:
        """Absolute path of a model's file or folder in a local root (remote roots: ``local_model``)."""
        path = Path(config.path)
        return path if path.is_absolute() else self.root / path

    def cache_key(self, config: ModelConfig) -> str:
        """The disk-cache entry of a model's files: key and hash, so a re-installed model is never served stale."""
        return safe_segment(f"{config.key}-{config.hash.rpartition(':')[2]}")

    @contextmanager
    def local_model(self, config: ModelConfig) -> Iterator[LocalModel]:
        """The model's files on this host for the duration of the block.

        Local roots and absolute (in-place) paths are used where they are. A remote root's ``files/<key>/`` is
        fetched into the disk cache on first use on this host, and the entry cannot be evicted until the block ends.
        """
        if self._local_root is not None or Path(config.path).is_absolute():
            config_path = self._stored_path(config.config_path, None, config) if config.config_path else None
            yield LocalModel(self._stored_path(config.path, None, config), config_path)
            return
        with self.disk_cache.use(self.cache_key(config), lambda dest: self._download(config, dest)) as entry:
            config_path = self._stored_path(config.config_path, entry, config) if config.config_path else None
            yield LocalModel(self._stored_path(config.path, entry, config), config_path)

    def _stored_path(self, stored: str, entry: Optional[Path], config: ModelConfig) -> Path:
        """A record's path (model or config) on this host: absolute as is, else under the local root or, for a
        remote root, under the model's cache entry (which holds what ``files/<key>/`` holds)."""
        path = Path(stored)
        if path.is_absolute():
            return path
        if entry is None:
            return self.root / path
        prefix = f"{FILES}/{config.key}/"
        if not stored.startswith(prefix):
            raise ModelFilesError(f"model {config.name!r} ({config.key}): path {stored!r} is outside {prefix} in the "
                                  f"remote model root {self.location}; expected every file of it under {prefix}")
        return entry.joinpath(*stored[len(prefix):].split("/"))

    def _download(self, config: ModelConfig, destination: Path) -> None:
        """Fetches every object under the model's ``files/<key>/`` into ``destination``, keeping the folders."""
        prefix = f"{FILES}/{config.key}/"
        keys = [k for k in self.backend.list(prefix) if k.startswith(prefix)]
        if not keys:
            raise ModelFilesError(f"model {config.name!r} ({config.key}): no files under {prefix} in {self.location}; "
                                  "reinstall it (`invokeai-airflow models install SOURCE --model-root ...`)")
        destination.mkdir(parents=True)
        for key in keys:
            target = destination.joinpath(*key[len(prefix):].split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            self.backend.download_file(key, target)
        model = self._stored_path(config.path, destination, config)
        if not model.exists():
            raise ModelFilesError(f"model {config.name!r} ({config.key}): {config.path} is not in {self.location}")
        size = model.stat().st_size if model.is_file() else sum(p.stat().st_size for p in model.rglob("*")
                                                                   if p.is_file())
        if size != config.file_size:
            raise ModelFilesError(f"model {config.name!r} ({config.key}): its files in {self.location} hold {size} "
                                  f"bytes, its record says {config.file_size}; reinstall it")

    # --- lookups ----------------------------------------------------------------------------------

    def by_hash(self, model_hash: str) -> Optional[ModelConfig]:
        return next((c for c in self.all() if c.hash == model_hash), None)

    def find(self, ref: str) -> ModelConfig:
        """A model by key, then by name (which must be unique)."""
        try:
            return self.get(ref)
        except UnknownModelError:
            pass
        named = [c for c in self.all() if c.name == ref]
        if len(named) == 1:
            return named[0]
        if named:
            keys = ", ".join(c.key for c in named)
            raise AmbiguousModelError(f"model name {ref!r} matches several models ({keys}); use a key")
        known = ", ".join(sorted(c.name for c in self.all())) or "none installed"
        raise UnknownModelError(f"no model with key or name {ref!r} (registered: {known})")

    def resolve(self, ref: str | Mapping[str, Any]) -> ModelConfig:
        """A model field's value: a key or name string, or an identifier from InvokeAI.

        An identifier exported from another InvokeAI install carries a key that means nothing here, so
        it is matched by key, then by hash, then by name (with the same base and type when given).
        """
        if isinstance(ref, str):
            return self.find(ref)
        key, model_hash, name = ref.get("key"), ref.get("hash"), ref.get("name")
        if not (key or model_hash or name):
            raise UnknownModelError(f"expected a registered model's name or key, or an identifier with a key, hash "
                                    f"or name; got {dict(ref)!r}")
        if key:
            try:
                return self.get(str(key))
            except UnknownModelError:
                pass
        if model_hash:
            found = self.by_hash(str(model_hash))
            if found is not None:
                return found
        if name:
            candidates = [c for c in self.all() if c.name == name
                          and ref.get("base") in (None, c.base.value) and ref.get("type") in (None, c.type.value)]
            if len(candidates) == 1:
                return candidates[0]
        raise UnknownModelError(
            f"model {name or key!r} (key {key}, hash {model_hash}) is not registered here; install it with "
            "`invokeai-airflow models install SOURCE` or set the field to a registered model's name")
