"""The model registry: one JSON record per model, kept in the model root beside the model files.

Every worker that sees the model root sees the same registry, without touching Airflow's database.
Layout: ``<root>/records/<key>.json`` and, for installed (copied) models, ``<root>/files/<key>/<name>``.
Records are written atomically through the same byte backend the artifact store uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from invokeai_provider.errors import InvalidArtifactKeyError, InvokeAIProviderError
from invokeai_provider.models.config import ModelConfig
from invokeai_provider.storage import LocalArtifactBackend, backend_for_uri

RECORDS = "records"
FILES = "files"


class UnknownModelError(InvokeAIProviderError):
    """No registered model matches a key, name, hash or identifier."""


class AmbiguousModelError(InvokeAIProviderError):
    """A name matches several registered models."""


def default_model_root() -> str:
    """``[invokeai] model_root`` (env ``AIRFLOW__INVOKEAI__MODEL_ROOT``), else ./invokeai-models."""
    from invokeai_provider.config import get_option

    return get_option("model_root") or Path("invokeai-models").resolve().as_uri()


class ModelRegistry:
    def __init__(self, root: Optional[str] = None) -> None:
        backend = backend_for_uri(root or default_model_root())
        if not isinstance(backend, LocalArtifactBackend):
            raise InvokeAIProviderError(f"model root {root!r}: only local model roots are supported so far")
        self.backend = backend
        self.root = backend.root

    # --- records ----------------------------------------------------------------------------------

    def add(self, config: ModelConfig) -> ModelConfig:
        self.backend.write_bytes(f"{RECORDS}/{config.key}.json", config.model_dump_json(indent=2).encode())
        return config

    def remove(self, key: str) -> None:
        self.backend.delete(f"{RECORDS}/{self.get(key).key}.json")

    def all(self) -> Iterator[ModelConfig]:
        for key in self.backend.list(RECORDS):
            if key.endswith(".json"):
                yield ModelConfig.model_validate_json(self.backend.read_bytes(key))

    def get(self, key: str) -> ModelConfig:
        record = f"{RECORDS}/{key}.json"
        try:
            found = "/" not in key and self.backend.exists(record)
        except InvalidArtifactKeyError:  # a name with spaces and the like is not a key
            found = False
        if not found:
            raise UnknownModelError(f"no model with key {key!r} in {self.root}")
        return ModelConfig.model_validate_json(self.backend.read_bytes(record))

    def model_path(self, config: ModelConfig) -> Path:
        """Absolute path of a model's file or folder."""
        path = Path(config.path)
        return path if path.is_absolute() else self.root / path

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
