"""SD1/SDXL T2I-Adapters (diffusers' ``T2IAdapter``) as InvokeAI's ``denoise_latents`` applies them: the adapter
runs once on its image, sized so its deepest features meet the UNet's deepest down block; each step of its range
its features, times the step's weight, are added inside the UNet's down blocks for both CFG halves, several
adapters' summed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

from invokeai_provider.models.image_util.control_image import prepare_control_image, step_weight

if TYPE_CHECKING:
    import torch

# how far the UNet's deepest down block is below the latents (InvokeAI's: SD1's 8, SDXL's 4)
MAX_UNET_DOWNSCALE = {"sd-1": 8, "sdxl": 4}


@dataclass
class SDAdapter:
    """One T2I-Adapter of a denoise: its features of the image, and when and how much they act."""

    features: list["torch.Tensor"]
    weight: Union[float, list[float]] = 1.0
    begin_step_percent: float = 0.0
    end_step_percent: float = 1.0


def adapter_features(model: Any, image: Any, base: str, latent_size: tuple[int, int],
                     resize_mode: str = "just_resize") -> list["torch.Tensor"]:
    """The adapter's features of a PIL image, prepared at the size InvokeAI gives it for these latents."""
    import torch

    if base not in MAX_UNET_DOWNSCALE:
        raise ValueError(f"T2I-Adapters of base {base!r} are not supported (sd-1 and sdxl are)")
    height, width = (side // MAX_UNET_DOWNSCALE[base] * model.total_downscale_factor for side in latent_size)
    pixels = prepare_control_image(image, width, height, resize_mode)[:, :model.config.in_channels]
    parameter = next(model.parameters())
    with torch.no_grad():
        return list(model(pixels.to(device=parameter.device, dtype=parameter.dtype)))


def adapter_residuals(adapters: list[SDAdapter], step: int, total: int) -> Optional[list["torch.Tensor"]]:
    """The summed, weighted features to add inside the down blocks at ``step`` (both CFG halves), or None."""
    import torch

    summed: Optional[list[torch.Tensor]] = None
    for adapter in adapters:
        weight = step_weight(adapter.weight, adapter.begin_step_percent, adapter.end_step_percent, step, total)
        if weight == 0.0:
            continue
        weighted = [torch.cat([f] * 2) * weight for f in adapter.features]
        summed = weighted if summed is None else [a + b for a, b in zip(summed, weighted)]
    return summed
