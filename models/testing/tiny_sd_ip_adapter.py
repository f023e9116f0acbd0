"""Tiny random-weight SD IP-Adapters and the CLIP vision encoders InvokeAI pairs with them.

The encoders are narrow ``CLIPVisionModelWithProjection`` models that read what the default CLIP image processor
gives (224 px images), one shaped per InvokeAI starter: ``ViT-H`` (SD1.5's ``ip_adapter_sd_image_encoder``) and
``ViT-G`` (SDXL's), with their own widths so a mismatched pair fails as it would with the real ones. The adapters are
in Tencent's key names, for the tiny UNets of `invokeai_provider.models.testing.tiny`: one ``to_k_ip``/``to_v_ip``
pair per cross-attention processor (odd indices), from the UNet's context width to the layer's width, and one of the
three image projections InvokeAI runs (``plain``, ``plus`` with diffusers' four resampler layers of 64-wide heads,
``full``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from invokeai_provider.models.testing.tiny import _SPECS, _construct, _derive_seed

__all__ = ["CLIP_VISION_SHAPES", "ENCODER_FOR_BASE", "build_sd_clip_vision", "build_sd_ip_adapter", "ip_adapter_state",
           "sd_clip_vision"]

Kind = Literal["plain", "plus", "full"]
# per InvokeAI encoder: (hidden width, projection width); the real ones are 1280/1024 (ViT-H) and 1664/1280 (ViT-G)
CLIP_VISION_SHAPES = {"ViT-H": (48, 64), "ViT-G": (40, 80)}
ENCODER_FOR_BASE = {"sd-1": "ViT-H", "sd-2": "ViT-H", "sdxl": "ViT-G"}
# what InvokeAI's folder format writes in image_encoder.txt for each encoder
ENCODER_REPOS = {"ViT-H": "InvokeAI/ip_adapter_sd_image_encoder", "ViT-G": "InvokeAI/ip_adapter_sdxl_image_encoder"}
TOKENS = 4
RESAMPLER_DEPTH, RESAMPLER_HEAD, FF_MULT = 4, 64, 4


def sd_clip_vision(encoder: str = "ViT-H", *, seed: int = 0) -> Any:
    """A tiny CLIP vision encoder with ``encoder``'s (scaled-down) widths."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    hidden, projection = CLIP_VISION_SHAPES[encoder]
    config = CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                              num_attention_heads=2, image_size=224, patch_size=32, projection_dim=projection,
                              hidden_act="gelu")
    return _construct(lambda: CLIPVisionModelWithProjection(config), materialize=True, seed=seed,
                      tag=f"clip-vision/{encoder}")


def build_sd_clip_vision(encoder: str, dest: Path, *, seed: int = 0) -> Path:
    """The tiny encoder as a transformers folder (with the default image processor's config beside it)."""
    from transformers import CLIPImageProcessor

    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists")
    sd_clip_vision(encoder, seed=seed).save_pretrained(dest, safe_serialization=True)
    CLIPImageProcessor().save_pretrained(dest)
    return dest


def _cross_attention_widths(base: str) -> dict[int, int]:
    """The tiny UNet's cross-attention processors: index among all processors -> the layer's width."""
    from diffusers import UNet2DConditionModel

    unet = _construct(lambda: UNet2DConditionModel(sample_size=8, layers_per_block=2, **_SPECS[base].unet),
                      materialize=False, seed=0, tag="")
    modules = dict(unet.named_modules())
    return {index: modules[name[:-len(".processor")]].to_k.out_features
            for index, name in enumerate(unet.attn_processors) if name.endswith("attn2.processor")}


def ip_adapter_state(base: str, kind: Kind = "plain", *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """``{"image_proj": ..., "ip_adapter": ...}`` in Tencent's names for the tiny ``base`` UNet, reading the
    encoder InvokeAI pairs with ``base``."""
    import torch

    if base not in ENCODER_FOR_BASE:
        raise ValueError(f"no tiny IP-Adapter for base {base!r}; expected one of {', '.join(ENCODER_FOR_BASE)}")
    generator = torch.Generator().manual_seed(_derive_seed(seed, f"{base}/ip_adapter/{kind}"))
    context = _SPECS[base].unet["cross_attention_dim"]
    hidden, projection = CLIP_VISION_SHAPES[ENCODER_FOR_BASE[base]]

    def linear(name: str, out: int, width: int, bias: bool = True) -> dict[str, Any]:
        tensors = {f"{name}.weight": torch.randn(out, width, generator=generator) / width ** 0.5}
        if bias:
            tensors[f"{name}.bias"] = torch.randn(out, generator=generator) * 0.1
        return tensors

    def norm(name: str, width: int) -> dict[str, Any]:
        return {f"{name}.weight": 1 + 0.1 * torch.randn(width, generator=generator),
                f"{name}.bias": 0.1 * torch.randn(width, generator=generator)}

    proj: dict[str, Any] = {}
    if kind == "plain":
        proj.update(linear("proj", TOKENS * context, projection), **norm("norm", context))
    elif kind == "full":
        proj.update(linear("proj.0", hidden, hidden), **linear("proj.2", context, hidden), **norm("proj.3", context))
    else:
        dim = RESAMPLER_HEAD  # one head
        proj["latents"] = torch.randn(1, TOKENS, dim, generator=generator) / dim ** 0.5
        proj.update(linear("proj_in", dim, hidden), **linear("proj_out", context, dim), **norm("norm_out", context))
        for layer in range(RESAMPLER_DEPTH):
            attention, feed_forward = f"layers.{layer}.0", f"layers.{layer}.1"
            proj.update(norm(f"{attention}.norm1", dim), **norm(f"{attention}.norm2", dim),
                        **linear(f"{attention}.to_q", dim, dim, bias=False),
                        **linear(f"{attention}.to_kv", 2 * dim, dim, bias=False),
                        **linear(f"{attention}.to_out", dim, dim, bias=False),
                        **norm(f"{feed_forward}.0", dim),
                        **linear(f"{feed_forward}.1", FF_MULT * dim, dim, bias=False),
                        **linear(f"{feed_forward}.3", dim, FF_MULT * dim, bias=False))
    layers: dict[str, Any] = {}
    for index, width in _cross_attention_widths(base).items():
        layers.update(linear(f"{index}.to_k_ip", width, context, bias=False),
                      **linear(f"{index}.to_v_ip", width, context, bias=False))
    return {"image_proj": proj, "ip_adapter": layers}


def build_sd_ip_adapter(base: str, dest: Path, *, kind: Kind = "plain", layout: Literal["invokeai", "file"] = "invokeai",
                        seed: int = 0) -> Path:
    """The tiny adapter as InvokeAI's folder (``ip_adapter.bin`` and ``image_encoder.txt``) or as the original single
    ``.safetensors`` file (``dest`` is then the file)."""
    import torch
    from safetensors.torch import save_file

    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists")
    state = ip_adapter_state(base, kind, seed=seed)
    if layout == "file":
        dest.parent.mkdir(parents=True, exist_ok=True)
        save_file({f"{part}.{key}": tensor.contiguous() for part, tensors in state.items()
                   for key, tensor in tensors.items()}, str(dest))
        return dest
    dest.mkdir(parents=True)
    torch.save(state, dest / "ip_adapter.bin")
    (dest / "image_encoder.txt").write_text(ENCODER_REPOS[ENCODER_FOR_BASE[base]])
    return dest
