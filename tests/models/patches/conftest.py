"""Tiny SD models whose UNet and text encoders the patch tests change and check."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from invokeai_provider.models.testing import tiny


@pytest.fixture(scope="module")
def tmp_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tiny-lora-") as d:  # ~1 GB: removed at teardown, not kept by pytest
        yield Path(d)


@pytest.fixture(scope="module")
def sd(tmp_dir: Path) -> Callable[[str], dict[str, Any]]:
    """Loaded unet/text encoders of a tiny model, built once per base."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    loaded: dict[str, dict[str, Any]] = {}

    def get(base: str) -> dict[str, Any]:
        if base not in loaded:
            path = tiny.build_sd_model(base, tmp_dir / base)
            parts: dict[str, Any] = {"unet": UNet2DConditionModel.from_pretrained(path / "unet", local_files_only=True),
                                     "text_encoder": CLIPTextModel.from_pretrained(path / "text_encoder",
                                                                                   local_files_only=True)}
            if base == "sdxl":
                parts["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(path / "text_encoder_2",
                                                                                      local_files_only=True)
            loaded[base] = {k: v.eval() for k, v in parts.items()}
        return loaded[base]

    return get
