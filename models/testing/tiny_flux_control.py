"""Tiny random-weight FLUX.1 models that steer the tiny transformer (`tiny_flux`): InstantX ControlNets (plain and
union) as diffusers folders or single files. Their widths fit the tiny transformer (two 16-wide heads), so a graph
with them runs; a single file is written with FLUX.1's real 128-wide heads instead when asked, since a single file
carries no config and FLUX's rotary axes are read as FLUX.1's."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from invokeai_provider.models.testing.tiny import _construct
from invokeai_provider.models.testing.tiny_flux import CLIP_WIDTH, T5_WIDTH

__all__ = ["build_flux_controlnet", "flux_controlnet"]


def flux_controlnet(*, union_modes: Optional[int] = None, seed: int = 0, head_width: int = 16) -> Any:
    """An InstantX FLUX ControlNet (diffusers' ``FluxControlNetModel``) of one double and one single block, with
    ``union_modes`` control modes when given."""
    from diffusers import FluxControlNetModel

    heads, axes = (2, (4, 6, 6)) if head_width == 16 else (1, (16, 56, 56))
    return _construct(lambda: FluxControlNetModel(
        in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=head_width, num_attention_heads=heads,
        joint_attention_dim=T5_WIDTH, pooled_projection_dim=CLIP_WIDTH, guidance_embeds=True, axes_dims_rope=axes,
        num_mode=union_modes), materialize=True, seed=seed, tag=f"flux/controlnet/{union_modes}/{head_width}")


def build_flux_controlnet(dest: Path, *, union_modes: Optional[int] = None, seed: int = 0) -> Path:
    """A tiny InstantX ControlNet: a diffusers folder, or for a ``.safetensors`` destination one file of diffusers'
    keys (with FLUX.1's 128-wide heads, as a single file's config is read from its shapes)."""
    from safetensors.torch import save_file

    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists")
    if dest.suffix == ".safetensors":
        model = flux_controlnet(union_modes=union_modes, seed=seed, head_width=128)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dest))
    else:
        flux_controlnet(union_modes=union_modes, seed=seed).save_pretrained(dest, safe_serialization=True)
    return dest
