"""Mistral text encoders (InvokeAI's ``mistral_encoder`` models, base any): FLUX.2 [dev]'s Mistral Small 3.1.

Identified with InvokeAI's rules: a folder with ``text_encoder/config.json`` (or ``config.json``) naming
``Mistral3ForConditionalGeneration``, ``MistralForCausalLM`` or ``MistralModel``, or a single file with Mistral's
names (``model.layers.*``, optionally under ``language_model.`` or ``text_encoder.``; no Qwen3 QK norms). Only Mistral
Small 3's geometry is accepted: 5,120 wide and 30 layers deep (BFL's "cow" distillation, variant
``cow_mistral3_small``) or 40 (Mistral Small 3 24B, what FLUX.2-dev's diffusers folder carries, ``mistral3_24b``); a
single file must also have Tekken's 131k-token vocabulary (at least 100,000), so a Llama of the same shape is not
taken for one. GGUF files are identified so that installing one is refused with the reason.

Loaded as the model the folder names (a ``Mistral3ForConditionalGeneration`` keeps its unused vision tower, as
diffusers' FLUX.2 pipeline does) or, for a single file, as a text-only ``MistralModel`` built from the shapes. As
InvokeAI does, the cow distillation is read without its final RMS norm (ComfyUI's reference reads layer 30's raw
output; transformers would normalize the last hidden state). The tokenizer comes from ``tokenizer/`` (FLUX.2-dev's
Pixtral processor folder: only its tokenizer and chat template are read, so torchvision is not needed); a single
file ships none (InvokeAI reads the Tekken tokenizer embedded in Comfy's files with ``mistral_common``, which this
provider does not have), so it comes from the ``--config`` folder the file was installed with.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from invokeai_provider.core.taxonomy import BaseModelType, MistralVariantType, ModelType, SubModelType
from invokeai_provider.models.model_manager.configs import ModelConfig, ModelFormat
from invokeai_provider.models.model_manager.probe import ProbeError, ProbeResult
from invokeai_provider.models.text_encoders.folders import (
    encoder_folder_config,
    encoder_folders,
    require_tokenizer,
)

MISTRAL_CLASSES = {"Mistral3ForConditionalGeneration", "MistralForCausalLM", "MistralModel"}
MISTRAL_WIDTH = 5120
HEAD_DIM = 128  # Mistral Small 3's head width: a single file's shapes give the heads' total width only
DEPTH_VARIANT = {30: MistralVariantType.Cow, 40: MistralVariantType.Mistral24B}
MIN_VOCAB = 100_000  # Tekken's vocabulary is 131,072; Llama-2-13B (same width and depth) has 32,000
FILE_PREFIXES = ("text_encoder.", "language_model.")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tekken.json")
MISTRAL_PARTS = (SubModelType.Tokenizer, SubModelType.TextEncoder)
EXPECTED = f"Mistral Small 3: {MISTRAL_WIDTH} wide, {' or '.join(map(str, DEPTH_VARIANT))} layers"


def mistral_variant(width: Any, depth: Any, where: Path) -> MistralVariantType:
    variant = DEPTH_VARIANT.get(depth) if width == MISTRAL_WIDTH else None
    if variant is None:
        raise ProbeError(f"{where}: a Mistral model {width} wide and {depth} layers deep is not a FLUX.2 [dev] text "
                         f"encoder; InvokeAI accepts {EXPECTED} (cow_mistral3_small / mistral3_24b)")
    return variant


# --- single files -----------------------------------------------------------------------------------


def _bare_key(key: str) -> str:
    for prefix in FILE_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _depth(names: Any, pattern: str) -> int:
    indices = {int(m.group(1)) for name in names if (m := re.search(pattern, name))}
    return max(indices) + 1 if indices else 0


def is_mistral_state(shapes: dict[str, tuple[int, ...]]) -> bool:
    """Mistral's causal-LM names (bare or under a wrapper prefix), without Qwen3's QK norms or a vision tower."""
    names = [_bare_key(key) for key in shapes]
    mistral = any(name.startswith(("model.layers.", "model.embed_tokens.")) for name in names)
    qk_norm = any(".self_attn.q_norm." in name or ".self_attn.k_norm." in name for name in names)
    vision = any(name.startswith(("visual.", "model.visual.", "vision_tower.")) for name in names)
    return mistral and not qk_norm and not vision


def probe_mistral_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Optional[ProbeResult]:
    """A single-file Mistral encoder, or None when the file does not have Mistral's names."""
    if not is_mistral_state(shapes):
        return None
    bare = {_bare_key(key): shape for key, shape in shapes.items()}
    vocab, width = (bare.get("model.embed_tokens.weight") or (None, None))[:2]
    if vocab is None or vocab < MIN_VOCAB:
        raise ProbeError(f"{path}: a Mistral-named model with a {vocab}-token vocabulary; FLUX.2 [dev]'s Mistral Small "
                         f"3 encoder has Tekken's 131,072 (InvokeAI requires at least {MIN_VOCAB:,})")
    variant = mistral_variant(width, _depth(bare, r"^model\.layers\.(\d+)\."), path)
    return ProbeResult(ModelType.MistralEncoder, ModelFormat.Checkpoint, BaseModelType.Any, variant)


# --- folders ----------------------------------------------------------------------------------------


def folder_geometry(config: dict[str, Any]) -> tuple[Any, Any]:
    """(width, depth) of a Mistral ``config.json``; a Mistral3 model keeps its language model's under
    ``text_config``."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    return (config.get("hidden_size", text.get("hidden_size")),
            config.get("num_hidden_layers", text.get("num_hidden_layers")))


def probe_mistral_folder(path: Path) -> Optional[ProbeResult]:
    """A standalone Mistral encoder folder (InvokeAI's ``mistral_encoder`` format), or None when the folder is not
    one (a whole pipeline is a main model)."""
    found = encoder_folder_config(path, MISTRAL_CLASSES)
    if found is None:
        return None
    encoder, tokenizer, config = found
    variant = mistral_variant(*folder_geometry(config), encoder / "config.json")
    require_tokenizer(path, tokenizer, "Mistral", TOKENIZER_FILES)
    return ProbeResult(ModelType.MistralEncoder, ModelFormat.MistralEncoder, BaseModelType.Any, variant)


# --- loading ----------------------------------------------------------------------------------------


def load_tokenizer(folder: Path) -> Any:
    """The tokenizer (with its chat template) of a tokenizer or Pixtral-processor folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def without_final_norm(model: Any) -> Any:
    """The cow distillation's reading: layer 30's raw output, not normalized (InvokeAI's and ComfyUI's)."""
    import torch

    body = text_body(model)
    if hasattr(body, "norm"):
        body.norm = torch.nn.Identity()
    return model


def load_encoder(folder: Path, dtype: Any, variant: Optional[MistralVariantType] = None) -> Any:
    """The model class a folder's ``config.json`` names (one of ``MISTRAL_CLASSES``)."""
    import transformers

    config = json.loads((folder / "config.json").read_text())
    names = [name for name in config.get("architectures") or [] if name in MISTRAL_CLASSES]
    model_class = getattr(transformers, names[0] if names else "MistralModel")
    model = model_class.from_pretrained(folder, local_files_only=True, torch_dtype=dtype).eval()
    return without_final_norm(model) if variant == MistralVariantType.Cow else model


def text_body(encoder: Any) -> Any:
    """The Mistral language model inside an encoder: a Mistral3 model's, a causal LM's, or the model itself."""
    inner = getattr(encoder, "model", encoder)
    return getattr(inner, "language_model", inner)


def load_part(config: ModelConfig, part: Optional[SubModelType], path: Path, config_path: Optional[Path],
              dtype: Any) -> Any:
    """A standalone Mistral encoder's tokenizer or encoder (``path``: its local files)."""
    from invokeai_provider.models.model_manager.manager import ModelLoadError

    where = f"model {config.name!r} ({config.key})"
    if part not in MISTRAL_PARTS:
        raise ModelLoadError(f"{where}: submodel {part.value if part else 'None'!r} does not exist in a "
                             f"{config.type.value} model (expected one of {', '.join(p.value for p in MISTRAL_PARTS)})")
    variant = config.variant if isinstance(config.variant, MistralVariantType) else None
    if config.format is ModelFormat.MistralEncoder:
        encoder, tokenizer = encoder_folders(path)
        return load_tokenizer(tokenizer) if part is SubModelType.Tokenizer else load_encoder(encoder, dtype, variant)
    if config.format is not ModelFormat.Checkpoint:
        raise ModelLoadError(f"{where}: a {config.format.value} Mistral encoder cannot be loaded here; install the "
                             "unquantized encoder (a folder with text_encoder/ and tokenizer/, or a safetensors file)")
    if part is SubModelType.Tokenizer:
        if config_path is None:
            raise ModelLoadError(
                f"{where} is a single-file Mistral encoder, which ships no usable tokenizer here (InvokeAI reads the "
                "Tekken tokenizer embedded in Comfy's files with mistral_common, which this provider does not have): "
                "install it again with --config naming a folder that holds the tokenizer (FLUX.2-dev's tokenizer/ "
                "folder), or install the encoder as a folder with text_encoder/ and tokenizer/")
        return load_tokenizer(encoder_folders(config_path)[1])
    return load_file(path, dtype, variant)


def load_file(path: Path, dtype: Any, variant: Optional[MistralVariantType] = None) -> Any:
    """A single-file Mistral encoder (``model.*`` names, bare or under a wrapper prefix; its LM head ignored) as a
    text-only ``MistralModel``, its architecture read from the shapes. Head width, rotary base and norm epsilon are
    Mistral Small 3's (the file does not carry them)."""
    from accelerate import init_empty_weights
    from safetensors.torch import load_file as read
    from transformers import MistralConfig, MistralModel

    from invokeai_provider.models.model_manager.manager import ModelLoadError

    state = {}
    for key, value in read(str(path)).items():
        bare = _bare_key(key)
        if bare.startswith("model."):
            state[bare[len("model."):]] = value
    try:
        vocab, width = state["embed_tokens.weight"].shape
        key_width = state["layers.0.self_attn.k_proj.weight"].shape[0]
        query_width = state["layers.0.self_attn.q_proj.weight"].shape[0]
        head_dim = HEAD_DIM
        if query_width % head_dim or key_width % head_dim:
            raise ModelLoadError(f"{path.name}: attention widths {query_width}/{key_width} are not whole "
                                 f"{head_dim}-wide heads (Mistral Small 3's)")
        config = MistralConfig(
            vocab_size=vocab, hidden_size=width, num_hidden_layers=_depth(state, r"^layers\.(\d+)\."),
            head_dim=head_dim, num_attention_heads=query_width // head_dim, num_key_value_heads=key_width // head_dim,
            intermediate_size=state["layers.0.mlp.gate_proj.weight"].shape[0], max_position_embeddings=131072,
            rms_norm_eps=1e-5, sliding_window=None, rope_parameters={"rope_type": "default",
                                                                     "rope_theta": 1000000000.0})
    except KeyError as missing:
        raise ModelLoadError(f"{path.name}: not a Mistral encoder this loader can build: no {missing} tensor") from None
    with init_empty_weights():
        model = MistralModel(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path.name}: the weights do not fit a Mistral encoder: {exc}") from None
    model = model.to(dtype=dtype).eval()
    return without_final_norm(model) if variant == MistralVariantType.Cow else model
