"""Identifying Z-Image models with InvokeAI's rules (its configs for Z-Image mains, LoRAs and ControlNets; a
single-file Qwen3 encoder is recognised here too, by `invokeai_provider.models.text_encoders.qwen3`); `invokeai_provider.models.model_manager.probe` calls these first, since
Z-Image's single files can carry ``model.diffusion_model.`` and ``lora_unet_`` names that SD's rules would misread.

- Main, diffusers: ``model_index.json`` naming a ZImagePipeline; the variant from the scheduler's shift (6 or more
  is the undistilled Base, else Turbo).
- Main, single file: Z-Image's own tensor names (``cap_embedder``, ``context_refiner``, ``cap_pad_token``), bare or
  under ComfyUI's ``model.diffusion_model.``, and no LoRA suffixes; variant Turbo (a file cannot tell). GGUF files with
  these names are identified too, and refused at install (`quantized`).
- LoRA: kohya names (``lora_unet__layers_0_attention_to_k``) or dotted names under ``diffusion_model.``,
  ``transformer.layers.`` or PEFT's ``base_model.model.transformer.layers.``, with LoRA suffixes.
- ControlNet: Alibaba's single file (``control_layers``, ``control_all_x_embedder``, ``control_noise_refiner``).
- Qwen3 encoders: see `invokeai_provider.models.text_encoders.qwen3`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from invokeai_provider.core.taxonomy import BaseModelType, ModelType, ZImageVariantType
from invokeai_provider.models.model_manager.configs import ModelFormat
from invokeai_provider.models.model_manager.probe import ProbeError, ProbeResult
from invokeai_provider.models.text_encoders.qwen3 import probe_qwen3_file, probe_qwen3_gguf

Z_IMAGE_PIPELINES = {"ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline",
                     "ZImageControlNetPipeline", "ZImageControlNetInpaintPipeline"}
MAIN_MARKS = {"cap_embedder", "context_refiner", "cap_pad_token"}  # InvokeAI's Z-Image main key parts
LORA_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".lora_A.weight", ".lora_B.weight", ".dora_scale", ".alpha")
KOHYA_LORA = re.compile(
    r"lora_unet__(layers|context_refiner|noise_refiner)_(\d+)_(attention|feed_forward)_(to_k|to_q|to_v|w1|w2|w3)")
DOTTED_LORA_PREFIXES = ("diffusion_model.layers.", "diffusion_model.context_refiner.", "diffusion_model.noise_refiner.",
                        "transformer.layers.", "base_model.model.transformer.layers.")
CONTROL_MARKS = {"control_layers", "control_all_x_embedder", "control_noise_refiner"}
BASE_SHIFT = 5.0  # a scheduler shift from here up is Z-Image Base's (6), below it Turbo's (3)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProbeError(f"{path}: unreadable config ({exc})") from None
    if not isinstance(data, dict):
        raise ProbeError(f"{path}: expected a JSON object")
    return data


def variant_from_scheduler(folder: Path) -> ZImageVariantType:
    scheduler = folder / "scheduler" / "scheduler_config.json"
    shift = _json(scheduler).get("shift", 3.0) if scheduler.is_file() else 3.0
    return ZImageVariantType.ZBase if float(shift) >= BASE_SHIFT else ZImageVariantType.Turbo


def probe_z_image_folder(path: Path, class_name: Optional[str]) -> Optional[ProbeResult]:
    """A ZImagePipeline folder (None for other pipelines)."""
    if class_name not in Z_IMAGE_PIPELINES:
        return None
    transformer = path / "transformer" / "config.json"
    if not transformer.is_file():
        raise ProbeError(f"{path}: a {class_name} folder without transformer/config.json")
    if (path / "transformer" / "quantization_config.json").is_file():
        raise ProbeError(f"{path}: an SDNQ-quantized Z-Image pipeline; running it needs SDNQ's dequantizing "
                         "loader, which this provider does not have; install the unquantized ZImagePipeline folder")
    return ProbeResult(ModelType.Main, ModelFormat.Diffusers, BaseModelType.ZImage, variant_from_scheduler(path))


def _bare(key: str) -> str:
    return key.removeprefix("model.diffusion_model.")


def is_main_state(keys: Any) -> bool:
    """InvokeAI's test for a Z-Image transformer: one of its own key parts, and no LoRA suffix anywhere."""
    names = [k for k in keys if isinstance(k, str)]
    if any(k.endswith(LORA_SUFFIXES) for k in names):
        return False
    return any(part in MAIN_MARKS for k in names for part in k.split("."))


def lora_format(keys: Any) -> Optional[str]:
    """``kohya`` or ``dotted`` for a Z-Image LoRA's keys (InvokeAI's heuristics), else None."""
    names = [k for k in keys if isinstance(k, str)]
    if any(KOHYA_LORA.match(k.split(".")[0]) for k in names):
        return "kohya"
    if any(k.startswith(DOTTED_LORA_PREFIXES) for k in names) and any(
            k.endswith(LORA_SUFFIXES[:5]) for k in names):
        return "dotted"
    return None


def is_control_state(keys: Any) -> bool:
    return any(k.split(".")[0] in CONTROL_MARKS for k in keys if isinstance(k, str))


def probe_z_image_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Optional[ProbeResult]:
    """A Z-Image main, LoRA or ControlNet file, or a single-file Qwen3 encoder; None for anything else."""
    if lora_format(shapes) is not None:
        return ProbeResult(ModelType.LoRA, ModelFormat.LyCORIS, BaseModelType.ZImage)
    if is_control_state(shapes):
        return ProbeResult(ModelType.ControlNet, ModelFormat.Checkpoint, BaseModelType.ZImage)
    if is_main_state(shapes):
        return ProbeResult(ModelType.Main, ModelFormat.Checkpoint, BaseModelType.ZImage, ZImageVariantType.Turbo)
    return probe_qwen3_file(path, shapes)


def probe_z_image_gguf(path: Path, shapes: dict[str, tuple[int, ...]]) -> Optional[ProbeResult]:
    """A GGUF Z-Image transformer or Qwen3 encoder (llama.cpp names, ``attn_q_norm``), identified so that installing
    it can be refused with the reason; None for others."""
    if is_main_state(shapes):
        return ProbeResult(ModelType.Main, ModelFormat.GGUFQuantized, BaseModelType.ZImage, ZImageVariantType.Turbo)
    return probe_qwen3_gguf(path, shapes)
