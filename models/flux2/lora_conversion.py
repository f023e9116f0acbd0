"""FLUX.2 LoRAs in the namings InvokeAI reads, brought to diffusers' ``Flux2Transformer2DModel`` names under
``transformer.`` (what the shared LoRA patcher reads).

- Diffusers' naming (what diffusers' FLUX.2 LoRA training saves, PEFT ``lora_A``/``lora_B`` or ``lora_down``/
  ``lora_up`` factors): keys under ``transformer.``, PEFT's ``base_model.model.``, or bare (``transformer_blocks.0.``,
  as some Klein fine-tunes ship them). They are told from FLUX.1's diffusers LoRAs, which share the
  ``transformer_blocks`` names, by FLUX.2's own modules (the single blocks' fused ``to_qkv_mlp_proj``, the SwiGLU
  ``linear_in``, the shared ``*_stream_modulation`` layers) or a context embedder wider than T5-XXL's.
- Black Forest Labs' naming (ai-toolkit/ComfyUI's ``diffusion_model.`` or PEFT's ``base_model.model.`` with dotted BFL
  layers, kohya's ``lora_unet_`` with underscores), in LoRA or LyCORIS factors: renamed with FLUX.2's BFL table
  (`bfl_names.FLUX2_NAMES`) by the converter FLUX.1's LoRAs go through, the double blocks' fused ``qkv`` split into
  its three layers. BFL names are FLUX.1's too, so a BFL-named LoRA is FLUX.2's only when something in it is: a
  shared modulation layer, an MLP of FLUX.2's SwiGLU width (FLUX.1's MLPs are 4x the block width, whatever the
  size), or InvokeAI's full-size marks (a context input of a FLUX.2 encoder's width, a 4,096 or 6,144 wide block).
  A LoRA that could be either is FLUX.1's, as InvokeAI decides.
"""

from __future__ import annotations

from typing import Any, Optional

from invokeai_provider.models.flux.lora_conversion import bfl_layers, flux_lora_format, to_diffusers_names
from invokeai_provider.models.flux2.bfl_names import FLUX1_ONLY, FLUX2_NAMES, SHARED_MODULATIONS

FLUX2_MARKERS = (".to_qkv_mlp_proj.", ".ff.linear_in.", "double_stream_modulation_", "single_stream_modulation.")
PREFIXES = ("transformer.", "base_model.model.")
BARE = ("transformer_blocks.", "single_transformer_blocks.")
# the width of a FLUX.2 block in the full-size models that no FLUX.1 block has (Klein 9B, [dev])
FLUX2_ONLY_WIDTHS = (4096, 6144)
FLUX1_MLP_RATIO = 4


def _is_factor(key: str) -> bool:
    return key.endswith((".lora_A.weight", ".lora_down.weight"))


def _diffusers_keys(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The keys of a diffusers-named LoRA's transformer layers (prefixed or bare)."""
    return [k for k in shapes if k.startswith(PREFIXES) or k.startswith(BARE)]


def _is_diffusers_flux2(shapes: dict[str, tuple[int, ...]]) -> bool:
    model = _diffusers_keys(shapes)
    if not model or not any(_is_factor(k) for k in model):
        return False
    if any(marker in key for key in model for marker in FLUX2_MARKERS):
        return True
    return any(len(shape) == 2 and shape[1] > 4096 for key, shape in shapes.items()
               if ".context_embedder." in key and _is_factor(key))


def _update_shape(parts: dict[str, tuple[int, ...]]) -> Optional[tuple[int, int]]:
    """``(output rows, input width)`` of a BFL layer's weight update, from its factors' shapes."""
    if {"lora_A.weight", "lora_B.weight"} <= parts.keys():
        return parts["lora_B.weight"][0], parts["lora_A.weight"][1]
    import torch

    from invokeai_provider.models.patches import lycoris

    factors = {role: torch.empty(shape, device="meta") for role, shape in parts.items()}
    try:
        rows, width = lycoris.update_shape(lycoris.kind_of(factors), factors)[:2]
    except ValueError:
        return None
    return rows, width


def _is_bfl_flux2(shapes: dict[str, tuple[int, ...]]) -> bool:
    from invokeai_provider.models.flux2.probe import CONTEXT_VARIANT

    if flux_lora_format(shapes) not in ("kohya", "aitoolkit"):
        return False
    layers = bfl_layers(shapes, FLUX2_NAMES)
    if any(layer in SHARED_MODULATIONS for layer in layers):
        return True
    if any(marker in "." + layer for layer in bfl_layers(shapes) for marker in FLUX1_ONLY):
        return False
    for layer, parts in layers.items():
        found = _update_shape(parts)
        if found is None:
            continue
        rows, width = found
        kind = layer.split(".", 2)[-1] if layer.startswith(("double_blocks.", "single_blocks.")) else layer
        if kind == "txt_in" and width in CONTEXT_VARIANT:
            return True
        if kind in ("img_attn.proj", "txt_attn.proj") and width in FLUX2_ONLY_WIDTHS:
            return True
        if kind in ("img_mlp.0", "txt_mlp.0") and rows != FLUX1_MLP_RATIO * width:
            return True  # SwiGLU: two halves of 3x the width
        if kind in ("img_mlp.2", "txt_mlp.2") and width != FLUX1_MLP_RATIO * rows:
            return True
        if kind == "linear1" and rows != (3 + FLUX1_MLP_RATIO) * width:
            return True  # q, k, v and the MLP's input
        if kind == "linear2" and width != (1 + FLUX1_MLP_RATIO) * rows:
            return True  # the attention's and the MLP's outputs side by side
    return False


def is_flux2_lora(shapes: dict[str, tuple[int, ...]]) -> bool:
    """A FLUX.2 LoRA in diffusers' or BFL's naming (see the module docstring)."""
    return _is_diffusers_flux2(shapes) or _is_bfl_flux2(shapes)


def context_width(shapes: dict[str, tuple[int, ...]]) -> Optional[int]:
    """The width of the context input the LoRA patches (``context_embedder`` / BFL's ``txt_in``), if it does."""
    for key, shape in shapes.items():
        if _is_factor(key) and len(shape) == 2 and (".context_embedder." in key or "txt_in." in key
                                                    or "txt_in_" in key):
            return shape[1]
    return None


def to_patch_names(tensors: dict[str, Any]) -> dict[str, Any]:
    """The LoRA's transformer tensors under ``transformer.<diffusers module>.<role>`` (what the LoRA patcher reads).

    BFL-named files are renamed (fused ``qkv`` split); in diffusers-named ones other keys (a text encoder's,
    ``alpha`` of unknown layers) keep their names, so a key that fits nothing is refused naming it when the LoRA is
    applied. Raises ValueError naming the key for a BFL layer that does not convert."""
    if flux_lora_format(tensors) in ("kohya", "aitoolkit"):
        return to_diffusers_names(tensors, FLUX2_NAMES, "FLUX.2")
    out = {}
    for key, tensor in tensors.items():
        if key.startswith("base_model.model."):
            key = "transformer." + key[len("base_model.model."):]
        elif key.startswith(BARE):
            key = "transformer." + key
        out[key] = tensor
    return out
