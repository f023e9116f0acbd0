"""Tiny random-weight SD control models that fit the tiny UNets of `invokeai_provider.models.testing.tiny`:
ControlNets (diffusers' ``ControlNetModel``) for SD1/SD2/SDXL, with the same down blocks, widths and
cross-attention width, so their residuals add onto those UNets' blocks (the control image encoded at the real 8x
downscale); and an SD1 T2I-Adapter (diffusers' ``T2IAdapter``, the full adapter) whose four feature levels have the
tiny SD1 UNet's four down-block widths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invokeai_provider.models.testing.tiny import _SPECS, _construct

__all__ = ["build_sd_controlnet", "build_sd_t2i_adapter", "sd_controlnet", "sd_t2i_adapter"]

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


def sd_t2i_adapter(base: str = "sd-1", *, seed: int = 0) -> Any:
    """A full T2I-Adapter for the tiny SD1 UNet (features at 1/8 to 1/64 of the image, its block widths)."""
    from diffusers import T2IAdapter

    if base != "sd-1":
        raise ValueError(f"no tiny T2I-Adapter for base {base!r}; expected sd-1")
    widths = list(_SPECS[base].unet["block_out_channels"])
    return _construct(lambda: T2IAdapter(in_channels=3, channels=widths, num_res_blocks=1, downscale_factor=8,
                                         adapter_type="full_adapter"), materialize=True, seed=seed,
                      tag=f"{base}/t2i_adapter")


def build_sd_t2i_adapter(base: str, dest: Path, *, seed: int = 0) -> Path:
    """The tiny T2I-Adapter of ``base`` as a diffusers folder."""
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists")
    sd_t2i_adapter(base, seed=seed).save_pretrained(dest, safe_serialization=True)
    return dest
