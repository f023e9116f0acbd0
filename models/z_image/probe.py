"""Identifying Z-Image models and Qwen3 encoders with InvokeAI's rules (its configs for Z-Image mains, LoRAs,
ControlNets and ``qwen3_encoder`` models); `invokeai_provider.models.model_manager.probe` calls these first, since
Z-Image's single files can carry ``model.diffusion_model.`` and ``lora_unet_`` names that SD's rules would misread.

- Main, diffusers: ``model_index.json`` naming a ZImagePipeline; the variant from the scheduler's shift (6 or more
  is the undistilled Base, else Turbo).
- Main, single file: Z-Image's own tensor names (``cap_embedder``, ``context_refiner``, ``cap_pad_token``), bare or
  under ComfyUI's ``model.diffusion_model.``, and no LoRA suffixes; variant Turbo (a file cannot tell). GGUF files with
  these names are identified too, and refused at install (`quantized`).
- LoRA: kohya names (``lora_unet__layers_0_attention_to_k``) or dotted names under ``diffusion_model.``,
  ``transformer.layers.`` or PEFT's ``base_model.model.transformer.layers.``, with LoRA suffixes.
- ControlNet: Alibaba's single file (``control_layers``, ``control_all_x_embedder``, ``control_noise_refiner``).
- Qwen3 encoder (base any): a folder with ``text_encoder/config.json`` (or ``config.json``) naming Qwen3 and its
  tokenizer, or a single file with Qwen3's names (``model.layers.*``, ``q_norm``); the variant from the hidden width
  (1024 0.6B, 2560 4B, 4096 8B), an unknown width is not a Qwen3 encoder InvokeAI knows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from invokeai_provider.core.taxonomy import BaseModelType, ModelType, Qwen3VariantType, ZImageVariantType
from invokeai_provider.models.model_manager.configs import ModelFormat
from invokeai_provider.models.model_manager.probe import ProbeError, ProbeResult

Z_IMAGE_PIPELINES = {"ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline",
                     "ZImageControlNetPipeline", "ZImageControlNetInpaintPipeline"}
MAIN_MARKS = {"cap_embedder", "context_refiner", "cap_pad_token"}  # InvokeAI's Z-Image main key parts
LORA_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".lora_A.weight", ".lora_B.weight", ".dora_scale", ".alpha")
KOHYA_LORA = re.compile(
    r"lora_unet__(layers|context_refiner|noise_refiner)_(\d+)_(attention|feed_forward)_(to_k|to_q|to_v|w1|w2|w3)")
DOTTED_LORA_PREFIXES = ("diffusion_model.layers.", "diffusion_model.context_refiner.", "diffusion_model.noise_refiner.",
                        "transformer.layers.", "base_model.model.transformer.layers.")
CONTROL_MARKS = {"control_layers", "control_all_x_embedder", "control_noise_refiner"}
QWEN3_CLASSES = {"Qwen3ForCausalLM", "Qwen3Model"}
QWEN3_WIDTHS = {1024: Qwen3VariantType.Qwen3_06B, 2560: Qwen3VariantType.Qwen3_4B, 4096: Qwen3VariantType.Qwen3_8B}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
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


def qwen3_variant(width: Any, where: Path) -> Qwen3VariantType:
    variant = QWEN3_WIDTHS.get(width) if isinstance(width, int) else None
    if variant is None:
        raise ProbeError(f"{where}: a Qwen3 encoder {width} wide; InvokeAI knows Qwen3 0.6B (1024), 4B (2560) and "
                         "8B (4096)")
    return variant


def _is_qwen3_state(shapes: dict[str, tuple[int, ...]]) -> bool:
    """Qwen3's names (``model.layers.*`` or ``model.embed_tokens``) with its QK norms, no vision tower."""
    names = list(shapes)
    qwen = any(k.startswith("model.layers.0.") or k == "model.embed_tokens.weight" for k in names)
    qk_norm = any(".self_attn.q_norm." in k or ".self_attn.k_norm." in k for k in names)
    vision = any(k.startswith(("visual.", "model.visual.")) or ".visual." in k for k in names)
    return qwen and qk_norm and not vision


def probe_z_image_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Optional[ProbeResult]:
    """A Z-Image main, LoRA or ControlNet file, or a single-file Qwen3 encoder; None for anything else."""
    if lora_format(shapes) is not None:
        return ProbeResult(ModelType.LoRA, ModelFormat.LyCORIS, BaseModelType.ZImage)
    if is_control_state(shapes):
        return ProbeResult(ModelType.ControlNet, ModelFormat.Checkpoint, BaseModelType.ZImage)
    if is_main_state(shapes):
        return ProbeResult(ModelType.Main, ModelFormat.Checkpoint, BaseModelType.ZImage, ZImageVariantType.Turbo)
    if _is_qwen3_state(shapes):
        embed = shapes.get("model.embed_tokens.weight")
        return ProbeResult(ModelType.Qwen3Encoder, ModelFormat.Checkpoint, BaseModelType.Any,
                           qwen3_variant(embed[-1] if embed else None, path))
    return None


def probe_z_image_gguf(path: Path, shapes: dict[str, tuple[int, ...]]) -> Optional[ProbeResult]:
    """A GGUF Z-Image transformer or Qwen3 encoder (llama.cpp names, ``attn_q_norm``), identified so that installing
    it can be refused with the reason; None for others."""
    if is_main_state(shapes):
        return ProbeResult(ModelType.Main, ModelFormat.GGUFQuantized, BaseModelType.ZImage, ZImageVariantType.Turbo)
    llama = any(k.startswith("blk.0.") or k == "token_embd.weight" for k in shapes)
    if llama and any(".attn_q_norm." in k for k in shapes) and not any(k.startswith("enc.") for k in shapes):
        embed = shapes.get("token_embd.weight")
        return ProbeResult(ModelType.Qwen3Encoder, ModelFormat.GGUFQuantized, BaseModelType.Any,
                           qwen3_variant(embed[-1] if embed else None, path))
    return None


def qwen3_folders(path: Path) -> tuple[Path, Path]:
    """(encoder folder, tokenizer folder) of a standalone Qwen3 encoder: ``text_encoder/`` and ``tokenizer/`` when it
    has them, else the folder itself."""
    encoder = path / "text_encoder" if (path / "text_encoder" / "config.json").is_file() else path
    tokenizer = path / "tokenizer" if (path / "tokenizer").is_dir() else path
    return encoder, tokenizer


def probe_qwen3_folder(path: Path) -> Optional[ProbeResult]:
    """A standalone Qwen3 encoder folder (InvokeAI's ``qwen3_encoder`` format), or None when the folder is not one."""
    if (path / "model_index.json").exists() or (path / "transformer").exists():
        return None
    encoder, tokenizer = qwen3_folders(path)
    if not (encoder / "config.json").is_file():
        return None
    config = _json(encoder / "config.json")
    architectures = config.get("architectures") or [config.get("_class_name")]
    if not any(name in QWEN3_CLASSES for name in architectures if isinstance(name, str)):
        return None
    if (encoder / "quantization_config.json").is_file():
        raise ProbeError(f"{path}: an SDNQ-quantized Qwen3 encoder; running it needs SDNQ's dequantizing loader, "
                         "which this provider does not have; install the unquantized encoder")
    if not any((tokenizer / name).is_file() for name in TOKENIZER_FILES):
        raise ProbeError(f"{path}: a Qwen3 encoder needs its tokenizer (tokenizer.json) in tokenizer/ or beside its "
                         "config; none found")
    return ProbeResult(ModelType.Qwen3Encoder, ModelFormat.Qwen3Encoder, BaseModelType.Any,
                       qwen3_variant(config.get("hidden_size"), encoder / "config.json"))
