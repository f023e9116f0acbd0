"""Tiny random-weight SD ControlNets (diffusers' ``ControlNetModel``) that fit the tiny SD1/SD2/SDXL UNets of
`invokeai_provider.models.testing.tiny`: the same down blocks, widths and cross-attention width, so their residuals
add onto those UNets' blocks; the control image is encoded at the real 8x downscale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invokeai_provider.models.testing.tiny import _SPECS, _construct

__all__ = ["build_sd_controlnet", "sd_controlnet"]

_UNET_ONLY = ("up_block_types",)  # UNet arguments a ControlNet has no counterpart for


def sd_controlnet(base: str, *, seed: int = 0) -> Any:
    """A ControlNet for the tiny ``base`` UNet (``sd-1``, ``sd-2`` or ``sdxl``)."""
    from diffusers import ControlNetModel

    if base not in ("sd-1", "sd-2", "sdxl"):
        raise ValueError(f"no tiny ControlNet for base {base!r}; expected sd-1, sd-2 or sdxl")
    kwargs = {k: v for k, v in _SPECS[base].unet.items() if k not in _UNET_ONLY}
    return _construct(lambda: ControlNetModel(in_channels=4, layers_per_block=2, **kwargs), materialize=True,
                      seed=seed, tag=f"{base}/controlnet")


def build_sd_controlnet(base: str, dest: Path, *, seed: int = 0) -> Path:
    """The tiny ControlNet of ``base`` as a diffusers folder."""
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists")
    sd_controlnet(base, seed=seed).save_pretrained(dest, safe_serialization=True)
    return dest
