"""Z-Image LoRAs in the formats InvokeAI reads, renamed to the module paths of diffusers' ``ZImageTransformer2DModel``
(owner ``transformer``) and of the Qwen3 encoder's ``Qwen3Model`` (owner ``text_encoder``), the names
`invokeai_provider.models.patches.lora` patches by:

- kohya: ``lora_unet__layers_0_attention_to_k.lora_down.weight`` (and ``context_refiner``/``noise_refiner``,
  ``feed_forward_w1``..``w3``) -> ``transformer.layers.0.attention.to_k.lora_down.weight``;
- dotted: the transformer's under ``diffusion_model.``, ``transformer.``, ``transformer.diffusion_model.`` or PEFT's
  ``base_model.model.transformer.``; the encoder's under ``text_encoder.`` or ``base_model.model.text_encoder.``
  (a causal LM's ``model.`` dropped).

Layer suffixes (``lora_A``/``lora_B``, ``lora_down``/``lora_up``, ``alpha``, DoRA's ``dora_scale``...) are kept: the
patcher reads them all. A PEFT layer without ``alpha`` is applied at scale 1, as InvokeAI does.
"""

from __future__ import annotations

from typing import Any

from invokeai_provider.models.z_image.probe import KOHYA_LORA

TRANSFORMER_PREFIXES = ("base_model.model.transformer.diffusion_model.", "base_model.model.transformer.",
                        "transformer.diffusion_model.", "transformer.", "diffusion_model.")
ENCODER_PREFIXES = ("base_model.model.text_encoder.", "text_encoder.")


class ZImageLoraError(ValueError):
    """A LoRA key that is not one of Z-Image's formats."""


def _renamed(key: str) -> str:
    stem, dot, suffix = key.partition(".")
    if (match := KOHYA_LORA.fullmatch(stem)) is not None:
        block, index, part, proj = match.groups()
        return f"transformer.{block}.{index}.{part}.{proj}{dot}{suffix}"
    for prefix in ENCODER_PREFIXES:
        if key.startswith(prefix):
            return "text_encoder." + key[len(prefix):].removeprefix("model.")
    for prefix in TRANSFORMER_PREFIXES:
        if key.startswith(prefix):
            return "transformer." + key[len(prefix):]
    raise ZImageLoraError(f"LoRA key {key!r} is not a Z-Image LoRA key (expected kohya lora_unet__layers_..., or "
                          "names under diffusion_model., transformer. or text_encoder.)")


def to_diffusers_names(state: dict[str, Any]) -> dict[str, Any]:
    """The LoRA's tensors under ``transformer.<module>`` / ``text_encoder.<module>`` names."""
    return {_renamed(key): value for key, value in state.items() if isinstance(key, str)}


__all__ = ["ZImageLoraError", "to_diffusers_names"]
