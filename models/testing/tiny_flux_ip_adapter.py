"""Tiny random-weight models for the FLUX IP-Adapter: a CLIP vision folder and an XLabs IP-Adapter file.

The CLIP vision model is shaped like the ViT-L encoder InvokeAI uses for FLUX where the adapter or the image
processor sees it: 224 px images in 14 px patches and 768-wide ``image_embeds`` (ViT-L's projection); inside it is
narrow (32 wide, one layer). Its folder holds a ``CLIPVisionModelWithProjection`` (``config.json`` naming it) and the
default CLIP image processor's ``preprocessor_config.json``. The IP-Adapter file has XLabs' key names and fits the
tiny FLUX transformer (`tiny_flux`): one double block, 32-wide attention, 4,096-wide context (T5-XXL's), and an image
projection from 768 to four context tokens (XLabs' count, and the one diffusers' loader assumes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invokeai_provider.models.testing.tiny import _construct
from invokeai_provider.models.testing.tiny_flux import T5_WIDTH

__all__ = ["CLIP_EMBED_WIDTH", "IP_TOKENS", "build_clip_vision", "build_flux_ip_adapter", "clip_vision_model",
           "flux_ip_adapter_state"]

CLIP_EMBED_WIDTH = 768  # ViT-L's image_embeds width: what XLabs' projection takes
IP_TOKENS = 4
IMAGE_SIZE, PATCH_SIZE = 224, 14
DOUBLE_BLOCKS, INNER = 1, 32  # the tiny FLUX transformer's double blocks and attention width


def clip_vision_model(seed: int = 0) -> Any:
    """A tiny ``CLIPVisionModelWithProjection`` with ViT-L's patching and projection width."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=CLIP_EMBED_WIDTH,
                              hidden_act="quick_gelu")
    return _construct(lambda: CLIPVisionModelWithProjection(config), materialize=True, seed=seed,
                      tag="flux/clip-vision")


def _xlabs_layout() -> Any:
    """Modules whose state-dict names are XLabs' (``ip_adapter_proj_model.*``, ``double_blocks.N.processor.*``)."""
    from torch import nn

    def block() -> nn.Module:
        return nn.ModuleDict({"processor": nn.ModuleDict({
            "ip_adapter_double_stream_k_proj": nn.Linear(T5_WIDTH, INNER),
            "ip_adapter_double_stream_v_proj": nn.Linear(T5_WIDTH, INNER)})})

    return nn.ModuleDict({
        "ip_adapter_proj_model": nn.ModuleDict({"proj": nn.Linear(CLIP_EMBED_WIDTH, IP_TOKENS * T5_WIDTH),
                                                "norm": nn.LayerNorm(T5_WIDTH)}),
        "double_blocks": nn.ModuleList(block() for _ in range(DOUBLE_BLOCKS))})


def flux_ip_adapter_state(seed: int = 0) -> dict[str, Any]:
    """The tiny XLabs IP-Adapter's tensors (float32), by XLabs' names."""
    model = _construct(_xlabs_layout, materialize=True, seed=seed, tag="flux/ip-adapter")
    return {key: value.detach().contiguous() for key, value in model.state_dict().items()}


def _new(dest: Path) -> Path:
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists")
    return dest


def build_clip_vision(dest: Path, *, seed: int = 0) -> Path:
    """A CLIP vision folder: ``config.json`` naming ``CLIPVisionModelWithProjection``, its weights and the default
    CLIP image processor's ``preprocessor_config.json``."""
    from transformers import CLIPImageProcessor

    dest = _new(dest)
    clip_vision_model(seed).save_pretrained(dest, safe_serialization=True)
    CLIPImageProcessor().save_pretrained(dest)
    return dest


def build_flux_ip_adapter(dest: Path, *, seed: int = 0) -> Path:
    """An XLabs FLUX IP-Adapter file (``ip_adapter.safetensors``'s layout) for the tiny transformer."""
    from safetensors.torch import save_file

    dest = _new(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(flux_ip_adapter_state(seed), str(dest))
    return dest
