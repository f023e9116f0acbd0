"""Installing models from a local path, an http(s) URL or a Hugging Face repo id (reference §4.3).

Every install probes the files first (so nothing unrecognised or unsafe is registered), hashes them,
then copies them into the model root (or registers them in place) and writes the record last: a failed
install leaves no record and no half-copied files behind. Into a remote root (S3) the files are uploaded
(multipart for big ones) under ``files/<key>/``; a model is listed only once every file is there.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from invokeai_provider.errors import InvalidArtifactKeyError, InvokeAIProviderError
from invokeai_provider.models.model_manager.configs import ModelConfig, ModelSourceType
from invokeai_provider.models.model_manager.hashing import model_hash
from invokeai_provider.models.model_manager.probe import probe
from invokeai_provider.models.model_manager.quantized import refusal
from invokeai_provider.models.model_manager.registry import FILES, ModelRegistry
from invokeai_provider.storage.base import check_key, safe_segment

HF_REPO_ID = re.compile(r"^([^/:\s]+/[^/:\s]+)(?::([^:]*)?(?::/?(\S+))?)?$")
REMOTE_CONFIG_FOLDER = "arch-config"  # a checkpoint's --config folder, uploaded beside it in a remote root


class InstallError(InvokeAIProviderError):
    """A model could not be installed; the message says why and what to do."""


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _upload_plan(path: Path, target: str) -> list[tuple[str, Path]]:
    """(object key, local file): a file goes to ``target``, a folder's files under it keeping their paths.

    Hidden files and folders (.gitattributes, a hub client's .cache) are not model files and stay behind.
    """
    files = [(target, path)] if path.is_file() else [
        (f"{target}/{item.relative_to(path).as_posix()}", item) for item in sorted(path.rglob("*"))
        if item.is_file() and not any(part.startswith(".") for part in item.relative_to(path).parts)]
    for key, item in files:
        try:
            check_key(key)
        except InvalidArtifactKeyError:
            raise InstallError(f"{item}: its path cannot be an object key (expected letters, digits and ._=+@:- in "
                               "every part of it); rename it and install again") from None
    return files


def _remove(registry: ModelRegistry, keys: list[str]) -> None:
    for key in keys:
        try:
            registry.backend.delete(key)
        except Exception:  # the store may be unreachable: the files stay orphaned, but never listed
            pass


def _upload(registry: ModelRegistry, plan: list[tuple[str, Path]]) -> None:
    """Uploads every file (multipart for big ones); on any failure removes what was uploaded and says so."""
    done: list[str] = []
    try:
        for key, item in plan:
            registry.backend.upload_file(key, item)
            done.append(key)
    except BaseException as exc:
        _remove(registry, done)
        if isinstance(exc, Exception):
            raise InstallError(f"upload to {registry.location} failed after {len(done)} of {len(plan)} files "
                               f"({type(exc).__name__}: {exc}); nothing was registered") from exc
        raise


def install_path(registry: ModelRegistry, path: Path, *, name: Optional[str] = None, inplace: bool = False,
                 allow_pickle: bool = False, config_path: Optional[str] = None, source: Optional[str] = None,
                 source_type: ModelSourceType = ModelSourceType.Path) -> ModelConfig:
    path = path.resolve()
    if inplace and registry.is_remote:
        raise InstallError(f"{path}: --inplace registers a local path where it lies, which workers reading the remote "
                           f"model root {registry.location} cannot see; install without --inplace to upload it")
    found = probe(path, allow_pickle=allow_pickle)
    refused = refusal(found.type, found.format, str(path), found.base)
    if refused:  # identified, but nothing here could run it
        raise InstallError(refused)
    digest = model_hash(path)
    existing = registry.by_hash(digest)
    if existing is not None:
        raise InstallError(f"{path}: already installed as {existing.name!r} (key {existing.key}, {digest})")
    key = str(uuid.uuid4())
    stored: Path | str = path
    size = _size(path)
    recorded_config = str(Path(config_path).resolve()) if config_path else None
    if registry.is_remote:
        stored = f"{FILES}/{key}/{safe_segment(path.name)}"
        plan = _upload_plan(path, stored)
        size = sum(item.stat().st_size for _, item in plan)
        if config_path:  # uploaded beside the model under a fixed name, so workers find it in their cached copy
            if not Path(config_path).is_dir():
                raise InstallError(f"--config {config_path}: not a folder (expected a diffusers folder of the same "
                                   "architecture)")
            recorded_config = f"{FILES}/{key}/{REMOTE_CONFIG_FOLDER}"
            plan += _upload_plan(Path(config_path).resolve(), recorded_config)
        _upload(registry, plan)
    elif not inplace:
        destination = registry.root / FILES / key / path.name
        staging = registry.root / FILES / f".staging-{key}"
        staging.mkdir(parents=True, exist_ok=True)
        try:
            target = staging / path.name
            shutil.copytree(path, target) if path.is_dir() else shutil.copy2(path, target)
            destination.parent.mkdir(parents=True, exist_ok=True)
            target.rename(destination)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        stored = destination.relative_to(registry.root)
    config = ModelConfig(
        key=key, hash=digest, path=str(stored), file_size=size, name=name or path.stem,
        source=source or str(path), source_type=source_type, type=found.type, format=found.format, base=found.base,
        variant=found.variant, prediction_type=found.prediction_type, repo_variant=found.repo_variant,
        config_path=recorded_config, installed_in_place=inplace, image_encoder_model_id=found.image_encoder_model_id,
    )
    if not registry.is_remote:
        return registry.add(config)
    try:
        return registry.add(config)  # last: the model is listed only once all its files are uploaded
    except BaseException:
        _remove(registry, [key for key, _ in plan])
        raise


def _check_public_host(url: str, allow_private: bool) -> None:
    host = urlparse(url).hostname
    if not host:
        raise InstallError(f"{url}: no host in the URL")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise InstallError(f"{url}: cannot resolve {host} ({exc.strerror})") from None
    private = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_global]
    if private and not allow_private:
        raise InstallError(f"{url}: {host} resolves to a private address ({', '.join(sorted(private))}); "
                           "refused unless private download URLs are allowed")


def install_url(registry: ModelRegistry, url: str, *, name: Optional[str] = None, allow_pickle: bool = False,
                allow_private: bool = False, timeout: float = 60.0) -> ModelConfig:
    import urllib.request

    _check_public_host(url, allow_private)
    filename = Path(urlparse(url).path).name or "model.safetensors"
    with tempfile.TemporaryDirectory(prefix="invokeai-download-") as tmp:
        target = Path(tmp) / filename
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as out:  # noqa: S310
                shutil.copyfileobj(response, out, length=1 << 20)
        except OSError as exc:
            raise InstallError(f"{url}: download failed ({exc})") from None
        return install_path(registry, target, name=name, allow_pickle=allow_pickle, source=url,
                            source_type=ModelSourceType.Url)


def install_hf_repo(registry: ModelRegistry, repo_id: str, *, name: Optional[str] = None,
                    allow_pickle: bool = False) -> ModelConfig:
    match = HF_REPO_ID.match(repo_id)
    assert match is not None
    repo, variant, subfolder = match.group(1), match.group(2) or "fp16", match.group(3)
    try:
        from huggingface_hub import snapshot_download

        with tempfile.TemporaryDirectory(prefix="invokeai-hf-") as tmp:
            folder = Path(snapshot_download(repo, local_dir=tmp, allow_patterns=f"{subfolder}/*" if subfolder else None))
            folder = folder / subfolder if subfolder else folder
            return install_path(registry, folder, name=name or repo.split("/")[-1], allow_pickle=allow_pickle,
                                source=repo_id, source_type=ModelSourceType.HFRepoID)
    except InstallError:
        raise
    except Exception as exc:  # the hub client raises many kinds of connection errors
        if "offline" in str(exc).lower() or "connect" in str(exc).lower() or "resolve" in str(exc).lower() \
                or type(exc).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError"):
            raise InstallError(
                f"{repo_id}: the Hugging Face hub cannot be reached from here ({type(exc).__name__}); download "
                f"the model ({variant} variant) on a connected machine and install its local path") from None
        raise InstallError(f"{repo_id}: install from the Hugging Face hub failed: {exc}") from None


def install_model(registry: ModelRegistry, source: str, *, name: Optional[str] = None, inplace: bool = False,
                  allow_pickle: bool = False, allow_private_urls: bool = False,
                  config_path: Optional[str] = None) -> ModelConfig:
    """Installs from whatever ``source`` is: an existing path, an http(s) URL, or a repo id.

    ``config_path`` names a diffusers folder of the same architecture, used to build a single-file checkpoint.
    """
    if Path(source).expanduser().exists():
        return install_path(registry, Path(source).expanduser(), name=name, inplace=inplace,
                            allow_pickle=allow_pickle, config_path=config_path)
    if source.startswith(("http://", "https://")):
        return install_url(registry, source, name=name, allow_pickle=allow_pickle, allow_private=allow_private_urls)
    if HF_REPO_ID.match(source):
        return install_hf_repo(registry, source, name=name, allow_pickle=allow_pickle)
    raise InstallError(f"{source!r}: not an existing path, an http(s) URL or a Hugging Face repo id (org/name)")
