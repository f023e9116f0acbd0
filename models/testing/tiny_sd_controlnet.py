"""Tiny random-weight SD control models that fit the tiny UNets of `invokeai_provider.models.testing.tiny`:
ControlNets (diffusers' ``ControlNetModel``) for SD1/SD2/SDXL, with the same down blocks, widths and
cross-attention width, so their residuals add onto those UNets' blocks (the control image encoded at the real 8x
downscale); and SD1/SDXL T2I-Adapters (diffusers' ``T2IAdapter``, ``full_adapter`` / ``full_adapter_xl``) whose
feature levels have the widths of the tiny UNet's blocks they are added to.

A ControlNet can also be written as one file in lllyasviel's original key layout (``control_model.`` prefix, or
none) or with diffusers' names (`write_controlnet_file`), the way ControlNets are distributed outside diffusers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from invokeai_provider.models.stable_diffusion.ldm_keys import unet_key_to_ldm
from invokeai_provider.models.testing.tiny import _SPECS, _construct

if TYPE_CHECKING:
    import torch

__all__ = ["build_sd_controlnet", "build_sd_controlnet_file", "build_sd_t2i_adapter", "controlnet_to_ldm",
           "sd_controlnet", "sd_t2i_adapter", "write_controlnet_file"]

FileLayout = Literal["control_model", "bare", "diffusers"]

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


def controlnet_key_to_ldm(key: str, config: Any) -> str:
    """lllyasviel's name (without ``control_model.``) of one diffusers ControlNetModel key: the UNet's names for
    the shared blocks, ``input_hint_block`` (conv, SiLU, conv, ...: convolutions at even indices) for the
    conditioning encoder, ``zero_convs`` and ``middle_block_out`` for the zero convolutions."""
    module, _, leaf = key.rpartition(".")
    parts = module.split(".")
    if module == "controlnet_cond_embedding.conv_in":
        return f"input_hint_block.0.{leaf}"
    if parts[:2] == ["controlnet_cond_embedding", "blocks"]:
        return f"input_hint_block.{2 * int(parts[2]) + 2}.{leaf}"
    if module == "controlnet_cond_embedding.conv_out":
        blocks = 2 * (len(config["conditioning_embedding_out_channels"]) - 1)
        return f"input_hint_block.{2 * blocks + 2}.{leaf}"
    if parts[0] == "controlnet_down_blocks":
        return f"zero_convs.{parts[1]}.0.{leaf}"
    if module == "controlnet_mid_block":
        return f"middle_block_out.0.{leaf}"
    return unet_key_to_ldm(key, config)


def controlnet_to_ldm(state_dict: dict[str, "torch.Tensor"], config: Any) -> dict[str, "torch.Tensor"]:
    """A diffusers ControlNet state dict under lllyasviel's names (no prefix); tensors shared."""
    return {controlnet_key_to_ldm(k, config): v for k, v in state_dict.items()}


def write_controlnet_file(model: Any, dest: Path, layout: FileLayout = "control_model") -> Path:
    """One safetensors file of a diffusers ``ControlNetModel``: lllyasviel's keys under ``control_model.``, the
    same without the prefix, or diffusers' own names."""
    from safetensors.torch import save_file

    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if layout != "diffusers":
        prefix = "control_model." if layout == "control_model" else ""
        state = {prefix + k: v for k, v in controlnet_to_ldm(state, model.config).items()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dest))
    return dest


def build_sd_controlnet_file(base: str, dest: Path, *, seed: int = 0, layout: FileLayout = "control_model") -> Path:
    """The tiny ControlNet of ``base`` (the same weights as `build_sd_controlnet`'s for the seed) as one file."""
    return write_controlnet_file(sd_controlnet(base, seed=seed), dest, layout)


def sd_t2i_adapter(base: str = "sd-1", *, seed: int = 0) -> Any:
    """A full T2I-Adapter for the tiny ``base`` UNet. SD1 (``full_adapter``): features at 1/8 to 1/64 of the image,
    the four down-block widths. SDXL (``full_adapter_xl``): features at 1/16, 1/16, 1/32 and 1/32 of the image,
    widths of the three down blocks and the mid block, where the UNet adds them."""
    from diffusers import T2IAdapter

    if base not in ("sd-1", "sdxl"):
        raise ValueError(f"no tiny T2I-Adapter for base {base!r}; expected sd-1 or sdxl")
    widths = list(_SPECS[base].unet["block_out_channels"])
    if base == "sdxl":
        kind, channels, downscale = "full_adapter_xl", [*widths, widths[-1]], 16
    else:
        kind, channels, downscale = "full_adapter", widths, 8
    return _construct(lambda: T2IAdapter(in_channels=3, channels=channels, num_res_blocks=1,
                                         downscale_factor=downscale, adapter_type=kind), materialize=True, seed=seed,
                      tag=f"{base}/t2i_adapter")


def build_sd_t2i_adapter(base: str, dest: Path, *, seed: int = 0) -> Path:
    """The tiny T2I-Adapter of ``base`` as a diffusers folder."""
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists")
    sd_t2i_adapter(base, seed=seed).save_pretrained(dest, safe_serialization=True)
    return dest
