"""A CogView4 main as InvokeAI 6.11 identifies one: a diffusers folder whose ``model_index.json`` names
``CogView4Pipeline`` (its Main_Diffusers_CogView4_Config: the class name alone implies the base; CogView4 has no
single-file, GGUF or variant forms). Here the parts the nodes load must be there too, so a folder missing its
transformer, GLM encoder or tokenizer is refused at install, not at the first generation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from invokeai_provider.models.model_manager.probe import ProbeResult

PIPELINES = ("CogView4Pipeline",)
PARTS = {"transformer": "CogView4Transformer2DModel", "text_encoder": "GlmModel", "vae": "AutoencoderKL"}


def probe_folder(path: Path, repo_variant: "str | None") -> "ProbeResult":
    from invokeai_provider.core.taxonomy import BaseModelType, ModelType
    from invokeai_provider.models.model_manager.configs import ModelFormat
    from invokeai_provider.models.model_manager.probe import ProbeError, ProbeResult

    index = json.loads((path / "model_index.json").read_text())
    for part, expected in PARTS.items():
        named = index.get(part)
        if not (isinstance(named, list) and len(named) == 2 and named[1] == expected):
            raise ProbeError(f"{path}: a CogView4Pipeline whose {part} is {named!r}; expected {expected}")
        if not (path / part / "config.json").is_file():
            raise ProbeError(f"{path}: a CogView4Pipeline without {part}/config.json")
    if not (path / "tokenizer" / "tokenizer.json").is_file():
        raise ProbeError(f"{path}: a CogView4Pipeline without tokenizer/tokenizer.json (GLM's tokenizer)")
    return ProbeResult(ModelType.Main, ModelFormat.Diffusers, BaseModelType.CogView4, repo_variant=repo_variant)


# diffusers' names of a CogView4Transformer2DModel's text projection and size conditioning, under any prefix
TRANSFORMER_KEYS = ("patch_embed.text_proj.weight", "time_condition_embed.condition_embedder.linear_1.weight")


def refuse_single_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """A CogView4 transformer as one file (or a folder of it alone) is refused with the reason: InvokeAI 6.11 takes
    CogView4 only as a whole ``CogView4Pipeline`` folder, since its nodes need the GLM encoder and VAE beside it."""
    from invokeai_provider.models.model_manager.probe import ProbeError

    found = {mark for key in shapes for mark in TRANSFORMER_KEYS if key.endswith(mark)}
    if len(found) == len(TRANSFORMER_KEYS):
        raise ProbeError(f"{path}: a CogView4 transformer on its own; CogView4 models are installed as a diffusers "
                         "folder (CogView4Pipeline: transformer, GLM text encoder and tokenizer, VAE), the only form "
                         "InvokeAI 6.11 accepts")
