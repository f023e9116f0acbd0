"""CLIP vision image encoders (InvokeAI's ``clip_vision`` models, base any): what IP-Adapters read an image prompt
through.

A ``clip_vision`` model is a transformers folder whose ``config.json`` names ``CLIPVisionModelWithProjection`` (or a
whole ``CLIPModel`` with a ``vision_config`` and no tokenizer; with a tokenizer such a folder is a ``clip_embed``
here). It is loaded as ``CLIPVisionModelWithProjection``, as InvokeAI loads it; the image processor is not read from
the folder but is transformers' default ``CLIPImageProcessor`` (224 px, OpenAI's mean and std), as InvokeAI encodes
IP-Adapter images. IP-Adapter nodes choose the encoder by its InvokeAI starter name (`CLIP_VISION_MODELS`); InvokeAI
downloads a missing one, which cannot happen offline, so a missing one is an error naming what to install.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

VISION_CLASS = "CLIPVisionModelWithProjection"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


@dataclass(frozen=True)
class ClipVisionStarter:
    """One of InvokeAI's CLIP vision starter models: the name it installs it under (and looks it up by) and its
    Hugging Face source."""

    name: str
    source: str


# InvokeAI's CLIP_VISION_MODEL_MAP: the encoder each ``clip_vision_model`` choice of an IP-Adapter node means
CLIP_VISION_MODELS: dict[str, ClipVisionStarter] = {
    "ViT-L": ClipVisionStarter("clip-vit-large-patch14", "InvokeAI/clip-vit-large-patch14"),
    "ViT-H": ClipVisionStarter("IP Adapter SD1.5 Image Encoder", "InvokeAI/ip_adapter_sd_image_encoder"),
    "ViT-G": ClipVisionStarter("IP Adapter SDXL Image Encoder", "InvokeAI/ip_adapter_sdxl_image_encoder"),
}


class ClipVisionError(ValueError):
    """No usable CLIP vision model; the message says which to install."""


def _config(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_clip_vision_folder(folder: Path) -> bool:
    """InvokeAI's test on the folder's config (``CLIPVisionModelWithProjection``, or ``CLIPModel`` with a vision
    config), narrowed for ``CLIPModel``: one with a tokenizer beside it is the CLIP text encoder we probe it as."""
    config = _config(folder)
    if config is None:
        return False
    architectures = config.get("architectures")
    name = config.get("_class_name") or (architectures[0] if isinstance(architectures, list) and architectures
                                         else None)
    if name == VISION_CLASS:
        return True
    if name == "CLIPModel" and "vision_config" in config:
        return not any((Path(folder) / f).is_file() or (Path(folder) / "tokenizer" / f).is_file()
                       for f in TOKENIZER_FILES)
    return False


def _installed(configs: Iterable[Any], names: list[str], source: str, what: str) -> Any:
    """The clip_vision record under the first of ``names`` installed, else the only one (else a ClipVisionError
    naming ``source`` and ``names[0]``)."""
    from invokeai_provider.core.taxonomy import ModelType
    from invokeai_provider.models.model_manager.starter_models import installed_starter

    configs = list(configs)
    installed = {c.name for c in configs if c.type is ModelType.CLIPVision}
    name = next((n for n in names if n in installed), names[0])
    return installed_starter(configs, ModelType.CLIPVision, name, source, what, ClipVisionError)


def _repo_name(model_id: str) -> str:
    return model_id.rstrip("/").split("/")[-1].strip()


def find_clip_vision(configs: Iterable[Any], kind: str = "ViT-L") -> Any:
    """The installed CLIP vision model an IP-Adapter's ``clip_vision_model`` choice means, among model records:
    InvokeAI's by its starter name (or its repo's name, which InvokeAI's folder format uses), else the only
    ``clip_vision`` model installed."""
    if kind not in CLIP_VISION_MODELS:
        raise ClipVisionError(f"CLIP vision model {kind!r}: expected one of {', '.join(CLIP_VISION_MODELS)}")
    starter = CLIP_VISION_MODELS[kind]
    return _installed(configs, [starter.name, _repo_name(starter.source)], starter.source,
                      f"the IP-Adapter's {kind} image encoder")


def find_named_clip_vision(configs: Iterable[Any], model_id: str) -> Any:
    """The CLIP vision model an InvokeAI-format IP-Adapter names in ``image_encoder.txt`` (a repo id such as
    ``InvokeAI/ip_adapter_sd_image_encoder``): installed under the id's last part, as InvokeAI installs it, or under
    InvokeAI's starter name for that repo; else the only ``clip_vision`` model installed."""
    starters = [s.name for s in CLIP_VISION_MODELS.values() if s.source == model_id]
    return _installed(configs, [_repo_name(model_id), *starters], model_id,
                      f"the IP-Adapter's image encoder {model_id}")


def load_clip_vision(folder: Path, dtype: "torch.dtype") -> Any:
    """The folder's ``CLIPVisionModelWithProjection`` (from a ``CLIPModel`` folder: its vision tower and
    projection)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if not is_clip_vision_folder(folder):
        raise ClipVisionError(f"{folder}: not a CLIP vision folder (config.json naming {VISION_CLASS})")
    config = CLIPVisionConfig.from_pretrained(folder, local_files_only=True)
    whole = _config(folder) or {}
    if "vision_config" in whole and isinstance(whole.get("projection_dim"), int):
        # a CLIPModel's projection width is its top-level one; the vision config alone may carry a default
        config.projection_dim = whole["projection_dim"]
    return CLIPVisionModelWithProjection.from_pretrained(folder, config=config, local_files_only=True,
                                                         torch_dtype=dtype).eval()


def image_embeds(encoder: Any, images: list["Image"]) -> "torch.Tensor":
    """The images' projected CLIP embeddings ``(n, projection_dim)`` (``image_embeds``, not the hidden states),
    through transformers' default CLIP image processor, in the encoder's dtype and device."""
    import torch
    from transformers import CLIPImageProcessor

    pixels = CLIPImageProcessor()(images=images, return_tensors="pt").pixel_values
    with torch.no_grad():
        return encoder(pixels.to(device=encoder.device, dtype=encoder.dtype)).image_embeds


def ip_adapter_embeds(encoder: Any, image: "Image") -> tuple["torch.Tensor", "torch.Tensor"]:
    """An IP-Adapter image prompt's embeddings and those of a black image of its size, which InvokeAI (after
    XLabs' ComfyUI nodes) uses for the negative (CFG) prediction."""
    from PIL import Image as PILImage

    image = image.convert("RGB")
    return image_embeds(encoder, [image]), image_embeds(encoder, [PILImage.new("RGB", image.size)])
