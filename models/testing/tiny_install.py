"""Building a tiny model of the catalog (`tiny_catalog`) and installing it into a model root, once.

The same install path as any model (probe, hash, record), so what is installed is what a user's own model of that
type and base would be. In a local root the files are built under ``<root>/tiny/`` and registered in place; into a
remote root (S3) they are built in a scratch folder and uploaded. Installing a name that is already registered
with the same type and base is a no-op, so the demo and smoke tests can call this every time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.models.model_manager.configs import ModelConfig
from invokeai_provider.models.model_manager.install import InstallError, install_model
from invokeai_provider.models.model_manager.registry import ModelRegistry, UnknownModelError
from invokeai_provider.models.testing.tiny_catalog import TinyModel, check_name, default_name, tiny_model

__all__ = ["TINY_FOLDER", "TinyInstall", "install_tiny"]

TINY_FOLDER = "tiny"  # under a local model root


@dataclass(frozen=True)
class TinyInstall:
    """The registered model, and whether this call built it (False: it was installed already)."""

    config: ModelConfig
    installed: bool


def install_tiny(registry: ModelRegistry, kind: str | ModelType, base: str | BaseModelType | None = None,
                 name: Optional[str] = None, *, log: Optional[Callable[[str], None]] = None,
                 format: str = "default", variant: Optional[str] = None) -> TinyInstall:
    """Builds and installs the tiny model of ``kind`` and ``base`` as ``name`` (default ``tiny-sd15``, ...); no
    ``base`` is the kind's only base, else sd-1; ``format`` ``gguf`` builds the GGUF-quantized file instead, and
    ``variant`` a main of another variant (``dev`` for FLUX.2).

    Raises ``ValueError`` for a type or base the catalog lacks and ``InstallError`` when ``name`` is taken by a
    model of another type or base, or when the built model does not probe as the catalog says.
    """
    entry = tiny_model(kind, base, format, variant)
    name = check_name(name or default_name(entry))
    existing = _registered(registry, name)
    if existing is not None:
        if (existing.type, existing.base) != (entry.type, entry.base):
            raise InstallError(f"a model named {name!r} is already installed in {registry.location} "
                               f"({existing.base.value} {existing.type.value}, key {existing.key}); choose another "
                               "name")
        return TinyInstall(existing, installed=False)
    say = log or (lambda message: None)
    if registry.is_remote:
        with tempfile.TemporaryDirectory(prefix="invokeai-tiny-") as scratch:
            path = Path(scratch) / entry.relative_path(name)
            say(f"building the tiny random-weight {entry.base.value} {entry.type.value} model {name!r} for "
                f"{registry.location}")
            entry.build(entry.base.value, path, entry.seed(name))
            config_path = entry.config(Path(scratch) / f"{name}-config") if entry.config else None
            config = install_model(registry, str(path), name=name,
                                   config_path=str(config_path) if config_path else None)
    else:
        path = registry.root / TINY_FOLDER / entry.relative_path(name)
        if not path.exists():  # a complete earlier build that was never registered is reused
            say(f"building the tiny random-weight {entry.base.value} {entry.type.value} model {name!r} in {path}")
            _build_atomically(entry, path, entry.seed(name))
        config_path = _config_folder(entry, path.parent / f"{name}-config")
        config = install_model(registry, str(path), name=name, inplace=True,
                               config_path=str(config_path) if config_path else None)
    _check_probed(registry, config, entry)
    return TinyInstall(config, installed=True)


def _registered(registry: ModelRegistry, name: str) -> Optional[ModelConfig]:
    try:
        return registry.find(name)
    except UnknownModelError:
        return None


def _build_atomically(entry: TinyModel, path: Path, seed: int) -> None:
    """Builds in a staging folder beside the target and renames it into place: an interrupted build leaves no
    half-written model where the next call would take it for a finished one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".building-{os.getpid()}-", dir=path.parent))
    try:
        built = entry.build(entry.base.value, staging / path.name, seed)
        built.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _config_folder(entry: TinyModel, path: Path) -> Optional[Path]:
    """The entry's ``--config`` folder (built once, atomically, beside the model), or None when it has none."""
    if entry.config is None:
        return None
    if not path.exists():
        staging = Path(tempfile.mkdtemp(prefix=f".building-{os.getpid()}-", dir=path.parent))
        try:
            entry.config(staging / path.name).rename(path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return path


def _check_probed(registry: ModelRegistry, config: ModelConfig, entry: TinyModel) -> None:
    """The registry's probe decides what was installed; a catalog entry that builds something else is a bug."""
    if (config.type, config.base) != (entry.type, entry.base):
        registry.remove(config.key)
        raise InstallError(f"the tiny {entry.base.value} {entry.type.value} model {config.name!r} probed as "
                           f"{config.base.value} {config.type.value}; it was not registered")
