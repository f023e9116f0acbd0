"""Identifying FLUX.2 models with InvokeAI's rules (its ``configs/main.py``, ``flux2_variant.py`` and ``vae.py``).

- Mains: a diffusers folder whose ``model_index.json`` names ``Flux2KleinPipeline`` (or ``Flux2Pipeline``), and BFL's
  single-file transformer (BFL's FLUX key, bare or under ``model.diffusion_model.``, with a text input wider than
  T5-XXL's 4,096 or FLUX.2's shared modulation layers). The variant comes from the context width
  (``joint_attention_dim`` / ``txt_in``): 7,680 is Klein 4B (Qwen3-4B), 12,288 Klein 9B (Qwen3-8B), 15,360 [dev]
  (Mistral); any other width is taken as Klein 4B, as InvokeAI does. The undistilled Base models share their
  distilled sibling's architecture and are told apart by "base" in the model's name. [dev] (a ``Flux2Pipeline``
  folder, or a BFL file 15,360 wide, with its guidance embedder) reads prompts with Mistral Small 3.1
  (`invokeai_provider.models.text_encoders.mistral`).
- VAEs: a diffusers ``AutoencoderKLFlux2`` folder, or a single file with FLUX.2's batch norm (``bn.running_mean``)
  or 32 latent channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from invokeai_provider.core.taxonomy import BaseModelType, Flux2VariantType, ModelType
from invokeai_provider.models.model_manager.configs import ModelFormat
from invokeai_provider.models.model_manager.probe import ProbeError, ProbeResult

PIPELINES = ("Flux2KleinPipeline", "Flux2Pipeline")
VAE_CLASS = "AutoencoderKLFlux2"
PREFIX = "model.diffusion_model."
FLUX_KEY = "double_blocks.0.img_attn.norm.key_norm.scale"
SHARED_MODULATION = ("single_stream_modulation.lin.weight", "double_stream_modulation_img.lin.weight")
CONTEXT_VARIANT = {7680: Flux2VariantType.Klein4B, 12288: Flux2VariantType.Klein9B, 15360: Flux2VariantType.Dev}
BASE_OF = {Flux2VariantType.Klein4B: Flux2VariantType.Klein4BBase, Flux2VariantType.Klein9B: Flux2VariantType.Klein9BBase}


def variant_for(context_width: Optional[int], name: str) -> Flux2VariantType:
    """InvokeAI's variant from the context width, with "base" in the name marking an undistilled Klein."""
    variant = CONTEXT_VARIANT.get(context_width or 0, Flux2VariantType.Klein4B)
    return BASE_OF.get(variant, variant) if "base" in name.lower() else variant


def _transformer_keys(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    if any(key.startswith(PREFIX) for key in shapes):
        return {key[len(PREFIX):]: shape for key, shape in shapes.items() if key.startswith(PREFIX)}
    return shapes


def is_flux2_transformer(shapes: dict[str, tuple[int, ...]]) -> bool:
    """BFL's FLUX.2 transformer: BFL's FLUX key and a text input wider than T5-XXL's, or the shared modulations,
    and no pooled-text input (``vector_in``: every FLUX.1 file has one, so a FLUX.1 file with a FLUX.2 mark is left
    to FLUX.1's probe, which refuses it)."""
    bare = _transformer_keys(shapes)
    if FLUX_KEY not in bare or "vector_in.in_layer.weight" in bare:
        return False
    context = bare.get("txt_in.weight")
    return (context is not None and len(context) == 2 and context[1] > 4096) or any(k in bare for k in SHARED_MODULATION)


def is_flux2_vae(shapes: dict[str, tuple[int, ...]]) -> bool:
    """InvokeAI's test: FLUX.2's batch norm, or 32 latent channels into the decoder."""
    conv_in = shapes.get("decoder.conv_in.weight")
    return "bn.running_mean" in shapes or (conv_in is not None and len(conv_in) == 4 and conv_in[1] == 32)


def probe_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Optional[ProbeResult]:
    """A FLUX.2 single file (transformer or VAE), or None when the file is neither."""
    if is_flux2_vae(shapes) and "encoder.conv_in.weight" in shapes:
        return ProbeResult(ModelType.VAE, ModelFormat.Checkpoint, BaseModelType.Flux2)
    if not is_flux2_transformer(shapes):
        return None
    bare = _transformer_keys(shapes)
    if any(key.endswith("quant_state.bitsandbytes__nf4") for key in bare):
        raise ProbeError(f"{path}: a bitsandbytes NF4-quantized FLUX.2 transformer; install the unquantized single "
                         "file or a Flux2KleinPipeline diffusers folder instead")
    variant = variant_for((bare.get("txt_in.weight") or (0, 0))[1], path.name)
    from invokeai_provider.models.flux2.loading import Flux2LoadError, bfl_transformer_config

    try:
        bfl_transformer_config(bare)
    except Flux2LoadError as exc:
        raise ProbeError(f"{path}: a BFL FLUX.2 transformer that cannot be loaded: {exc}") from None
    return ProbeResult(ModelType.Main, ModelFormat.Checkpoint, BaseModelType.Flux2, variant)


def probe_lora(path: Path, shapes: dict[str, tuple[int, ...]]) -> Optional[ProbeResult]:
    """A FLUX.2 LoRA in diffusers' or BFL's naming (`lora_conversion.is_flux2_lora`), with the variant its context
    input tells when it patches that layer."""
    from invokeai_provider.models.flux2.lora_conversion import context_width, is_flux2_lora

    if not is_flux2_lora(shapes):
        return None
    variant = CONTEXT_VARIANT.get(context_width(shapes) or 0)
    return ProbeResult(ModelType.LoRA, ModelFormat.LyCORIS, BaseModelType.Flux2, variant)


def probe_gguf(path: Path, shapes: dict[str, tuple[int, ...]]) -> Optional[ProbeResult]:
    """A GGUF-quantized FLUX.2 transformer (BFL's names), with its variant."""
    if not is_flux2_transformer(shapes):
        return None
    bare = _transformer_keys(shapes)
    variant = variant_for((bare.get("txt_in.weight") or (0, 0))[-1], path.name)
    return ProbeResult(ModelType.Main, ModelFormat.GGUFQuantized, BaseModelType.Flux2, variant)


def probe_folder(path: Path, config: dict, transformer: dict, repo_variant: Optional[str]) -> ProbeResult:
    """A FLUX.2 diffusers pipeline folder (``config`` is its model_index.json, ``transformer`` its transformer's
    config)."""
    variant = variant_for(transformer.get("joint_attention_dim"), path.name)
    if transformer.get("in_channels") != 128:
        raise ProbeError(f"{path}: transformer in_channels {transformer.get('in_channels')} is not FLUX.2's 128 (32 "
                         "latent channels in 2x2 patches)")
    return ProbeResult(ModelType.Main, ModelFormat.Diffusers, BaseModelType.Flux2, variant, repo_variant=repo_variant)
