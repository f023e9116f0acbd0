"""Tiny random-weight FLUX.1 models that steer the tiny transformer (`tiny_flux`): InstantX ControlNets (plain and
union) and XLabs ControlNets, as diffusers folders or single files (XLabs' in BFL's key layout). Their widths fit
the tiny transformer (two 16-wide heads), so a graph with them runs; a single file is written with FLUX.1's real
128-wide heads instead, since a single file carries no config and FLUX's rotary axes are read as FLUX.1's. A tiny
transformer with more double blocks than an XLabs ControlNet has lets its cyclic residual mapping show."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from invokeai_provider.models.testing.tiny import _construct
from invokeai_provider.models.testing.tiny_flux import CLIP_WIDTH, T5_WIDTH

__all__ = ["build_flux_controlnet", "build_flux_xlabs_controlnet", "flux_controlnet", "flux_xlabs_controlnet",
           "deep_flux_transformer"]


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


def flux_xlabs_controlnet(*, seed: int = 0, head_width: int = 16, double_blocks: int = 2) -> Any:
    """An XLabs FLUX ControlNet as diffusers holds it (``FluxControlNetModel`` with the 16-channel input-hint
    encoder and 2x2 patches): ``double_blocks`` double blocks, no single ones."""
    from diffusers import FluxControlNetModel

    heads, axes = (2, (4, 6, 6)) if head_width == 16 else (1, (16, 56, 56))
    return _construct(lambda: FluxControlNetModel(
        patch_size=2, in_channels=64, num_layers=double_blocks, num_single_layers=0, attention_head_dim=head_width,
        num_attention_heads=heads, joint_attention_dim=T5_WIDTH, pooled_projection_dim=CLIP_WIDTH,
        guidance_embeds=True, axes_dims_rope=axes, conditioning_embedding_channels=16), materialize=True, seed=seed,
        tag=f"flux/xlabs-controlnet/{double_blocks}/{head_width}")


def build_flux_xlabs_controlnet(dest: Path, *, seed: int = 0) -> Path:
    """A tiny XLabs ControlNet: a diffusers folder, or for a ``.safetensors`` destination one file in XLabs' own
    layout (BFL's names, fused q/k/v; FLUX.1's 128-wide heads, as its config is read from the shapes)."""
    from safetensors.torch import save_file

    from invokeai_provider.models.flux.xlabs_controlnet import diffusers_to_xlabs

    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists")
    if dest.suffix == ".safetensors":
        state = flux_xlabs_controlnet(seed=seed, head_width=128).state_dict()
        save_file({k: v.contiguous() for k, v in diffusers_to_xlabs(state).items()}, str(dest))
    else:
        flux_xlabs_controlnet(seed=seed).save_pretrained(dest, safe_serialization=True)
    return dest


def deep_flux_transformer(*, double_blocks: int = 3, seed: int = 0) -> Any:
    """The tiny dev transformer's widths with ``double_blocks`` double blocks: with 3 blocks and a 2-block XLabs
    ControlNet, XLabs' cyclic mapping (0, 1, 0) and InstantX's (0, 0, 1) differ."""
    from diffusers import FluxTransformer2DModel

    from invokeai_provider.models.testing.tiny_flux import _transformer

    config = {**_transformer("dev", seed).config, "num_layers": double_blocks}
    return _construct(lambda: FluxTransformer2DModel.from_config(config), materialize=True, seed=seed,
                      tag=f"flux-dev/transformer/{double_blocks}")
