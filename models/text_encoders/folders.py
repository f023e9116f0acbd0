"""The standalone text-encoder folder InvokeAI installs for its LLM encoders (Qwen3, Mistral): the encoder in
``text_encoder/`` and its tokenizer in ``tokenizer/``, or both in the folder itself, the encoder's ``config.json``
naming its class. A whole pipeline folder is a main model, not an encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

from invokeai_provider.models.model_manager.probe import ProbeError


def encoder_folders(path: Path) -> tuple[Path, Path]:
    """(encoder folder, tokenizer folder): ``text_encoder/`` and ``tokenizer/`` when it has them, else the folder
    itself."""
    encoder = path / "text_encoder" if (path / "text_encoder" / "config.json").is_file() else path
    tokenizer = path / "tokenizer" if (path / "tokenizer").is_dir() else path
    return encoder, tokenizer


def encoder_folder_config(path: Path, classes: Iterable[str]) -> Optional[tuple[Path, Path, dict[str, Any]]]:
    """(encoder folder, tokenizer folder, encoder config) of a standalone encoder folder whose config names one of
    ``classes``; None when the folder is not one. Raises ProbeError for an unreadable config."""
    if (path / "model_index.json").exists() or (path / "transformer").exists():
        return None
    encoder, tokenizer = encoder_folders(path)
    if not (encoder / "config.json").is_file():
        return None
    try:
        config = json.loads((encoder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProbeError(f"{encoder / 'config.json'}: unreadable config ({exc})") from None
    if not isinstance(config, dict):
        return None
    architectures = config.get("architectures") or [config.get("_class_name")]
    if not any(name in set(classes) for name in architectures if isinstance(name, str)):
        return None
    return encoder, tokenizer, config


def require_tokenizer(path: Path, tokenizer: Path, what: str, files: Iterable[str]) -> None:
    """Refuses an encoder folder without its tokenizer, which the prompt nodes need."""
    if not any((tokenizer / name).is_file() for name in files):
        raise ProbeError(f"{path}: a {what} encoder needs its tokenizer (tokenizer.json) in tokenizer/ or beside its "
                         "config; none found")
