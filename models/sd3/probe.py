"""Identifying SD3 / SD3.5 models with InvokeAI 6.11's rules (configs/main.py ``Main_Diffusers_SD3_Config``).

- A main is a diffusers folder whose ``model_index.json`` names ``StableDiffusion3Pipeline``; its transformer must
  be an ``SD3Transformer2DModel``. InvokeAI has no single-file SD3 config: Stability's single files
  (``sd3.5_large.safetensors``, MMDiT keys ``joint_blocks.*`` bare or under ``model.diffusion_model.``) are
  identified here and refused with that reason, rather than failing as a UNet checkpoint would. A bare
  ``SD3Transformer2DModel`` folder (InvokeAI matches its class name too) is refused: SD3's loader takes the
  tokenizers from the main, which such a folder lacks.
- A VAE: InvokeAI has no SD3 VAE config (it would call a 16-channel one FLUX's). SD3's and FLUX.1's VAEs share the
  architecture but not the latent scaling: a diffusers ``AutoencoderKL`` folder with 16 latent channels and SD3's
  ``scaling_factor`` (1.5305) is taken as sd-3, so ``sd3_model_loader``'s ``vae_model`` can offer it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.models.model_manager.configs import ModelFormat
from invokeai_provider.models.model_manager.probe import ProbeError, ProbeResult

SD3_PIPELINES = ("StableDiffusion3Pipeline",)
SD3_TRANSFORMER = "SD3Transformer2DModel"
SD3_VAE_SCALING = 1.5305
SD3_LATENT_CHANNELS = 16
CHECKPOINT_KEY = "joint_blocks.0.context_block.attn.qkv.weight"  # Stability's MMDiT names
CHECKPOINT_PREFIX = "model.diffusion_model."
# what a StableDiffusion3Pipeline folder must carry for sd3_model_loader's defaults
REQUIRED_PARTS = ("transformer", "vae", "tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2")


def _config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProbeError(f"{path}: unreadable config ({exc})") from None
    if not isinstance(data, dict):
        raise ProbeError(f"{path}: expected a JSON object")
    return data


def probe_sd3_folder(path: Path) -> ProbeResult:
    """A ``StableDiffusion3Pipeline`` folder: an sd-3 main (diffusers)."""
    index = _config(path / "model_index.json")
    missing = [part for part in REQUIRED_PARTS
               if not (isinstance(index.get(part), list) and index[part][0] and (path / part).is_dir())]
    if missing:
        raise ProbeError(f"{path}: a StableDiffusion3Pipeline folder without {', '.join(missing)}; SD3 mains are "
                         "installed whole (InvokeAI's sd3_model_loader takes the tokenizers and defaults from it)")
    transformer = _config(path / "transformer" / "config.json")
    if transformer.get("_class_name") != SD3_TRANSFORMER:
        raise ProbeError(f"{path}: transformer is {transformer.get('_class_name')!r}, not {SD3_TRANSFORMER}")
    repo_variant = "fp16" if any(".fp16." in p.name for p in path.rglob("*") if p.is_file()) else None
    return ProbeResult(ModelType.Main, ModelFormat.Diffusers, BaseModelType.StableDiffusion3,
                       repo_variant=repo_variant)


def refuse_transformer_folder(path: Path, config: dict[str, Any]) -> None:
    """Raises ProbeError for a folder holding an SD3 transformer alone."""
    if config.get("_class_name") == SD3_TRANSFORMER:
        raise ProbeError(f"{path}: an SD3Transformer2DModel folder on its own; install the whole "
                         "StableDiffusion3Pipeline folder (e.g. stabilityai/stable-diffusion-3.5-medium): SD3's "
                         "model loader takes the CLIP tokenizers from the main")


def is_sd3_checkpoint(shapes: dict[str, tuple[int, ...]]) -> bool:
    return CHECKPOINT_KEY in shapes or CHECKPOINT_PREFIX + CHECKPOINT_KEY in shapes


def refuse_checkpoint(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Raises ProbeError for Stability's single-file SD3 / SD3.5 checkpoints, which InvokeAI 6.11 does not
    install."""
    if is_sd3_checkpoint(shapes):
        raise ProbeError(f"{path}: a single-file SD3/SD3.5 checkpoint (Stability's MMDiT keys); InvokeAI 6.11 "
                         "installs SD3 only as a diffusers StableDiffusion3Pipeline folder (e.g. "
                         "stabilityai/stable-diffusion-3.5-medium or -large): install that folder instead")


def vae_folder_base(config: dict[str, Any]) -> Optional[BaseModelType]:
    """sd-3 for a diffusers AutoencoderKL with SD3's 16 latent channels and scaling factor, else None."""
    scaling = config.get("scaling_factor")
    if config.get("latent_channels") == SD3_LATENT_CHANNELS and isinstance(scaling, (int, float)) \
            and abs(scaling - SD3_VAE_SCALING) < 1e-4:
        return BaseModelType.StableDiffusion3
    return None
