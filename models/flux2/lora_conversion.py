"""FLUX.2 Klein LoRAs in diffusers' naming (what diffusers' FLUX.2 LoRA training saves, PEFT ``lora_A``/``lora_B``
or kohya-style ``lora_down``/``lora_up`` factors): keys under ``transformer.`` (or PEFT's ``base_model.model.``) that
name ``Flux2Transformer2DModel``'s modules. They are told from FLUX.1's diffusers LoRAs, which share the
``transformer_blocks`` names, by FLUX.2's own modules (the single blocks' fused ``to_qkv_mlp_proj``, the shared
``*_stream_modulation`` layers) or a context embedder wider than T5-XXL's. BFL-named and kohya-prefixed FLUX.2 LoRAs,
which InvokeAI also reads, are not converted yet and are refused with the reason when installed."""

from __future__ import annotations

from typing import Any

FLUX2_MARKERS = (".to_qkv_mlp_proj.", "double_stream_modulation_", "single_stream_modulation.")
PREFIXES = ("transformer.", "base_model.model.")


def _owned(key: str) -> bool:
    return key.startswith(PREFIXES)


def is_flux2_lora(shapes: dict[str, tuple[int, ...]]) -> bool:
    """A diffusers-named FLUX.2 LoRA (see the module docstring)."""
    model = [k for k in shapes if _owned(k)]
    if not model or not any(k.endswith((".lora_A.weight", ".lora_down.weight")) for k in model):
        return False
    if any(marker in key for key in model for marker in FLUX2_MARKERS):
        return True
    context = [shape for key, shape in shapes.items() if ".context_embedder." in key and
               key.endswith((".lora_A.weight", ".lora_down.weight"))]
    return any(len(shape) == 2 and shape[1] > 4096 for shape in context)


def to_patch_names(tensors: dict[str, Any]) -> dict[str, Any]:
    """The LoRA's transformer tensors under ``transformer.<module>.<role>`` (what the LoRA patcher reads); other
    keys (a text encoder's, ``alpha`` of unknown layers) keep their names, so a key that fits nothing is refused
    naming it when the LoRA is applied."""
    out = {}
    for key, tensor in tensors.items():
        if key.startswith("base_model.model."):
            key = "transformer." + key[len("base_model.model."):]
        out[key] = tensor
    return out
