"""SD3 sampling as InvokeAI's ``sd3_denoise`` does it: seeded noise, an unshifted flow-matching schedule (InvokeAI
ignores the scheduler's shift of 3), clipped for image-to-image as FLUX's is, and the inpainting mask.

Latents are ``(1, 16, h/8, w/8)``; the transformer patches them itself (2x2), so nothing is packed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from invokeai_provider.models.flux.sampling import clip_schedule

if TYPE_CHECKING:
    import torch

__all__ = ["LATENT_CHANNELS", "SIZE_MULTIPLE", "clip_schedule", "inpaint_mask", "latent_shape", "noise", "schedule"]

LATENT_CHANNELS = 16
SIZE_MULTIPLE = 16  # the VAE's 8x times the transformer's 2x2 patches
LATENT_SCALE = 8


def latent_shape(height: int, width: int, channels: int = LATENT_CHANNELS) -> tuple[int, int, int, int]:
    return (1, channels, height // LATENT_SCALE, width // LATENT_SCALE)


def noise(seed: int, height: int, width: int, channels: int = LATENT_CHANNELS) -> "torch.Tensor":
    """InvokeAI's SD3 noise: drawn on the CPU in float16 from the seed, then cast to float32, so a seed gives the same
    noise on every device."""
    import torch

    drawn = torch.randn(latent_shape(height, width, channels), dtype=torch.float16, device="cpu",
                        generator=torch.Generator("cpu").manual_seed(seed))
    return drawn.float()


def schedule(steps: int) -> list[float]:
    """``steps + 1`` timesteps evenly from 1 to 0 (no shift)."""
    import torch

    if steps < 1:
        raise ValueError(f"steps {steps}: expected at least 1")
    return torch.linspace(1, 0, steps + 1).tolist()


def inpaint_mask(mask: "torch.Tensor", height: int, width: int) -> "torch.Tensor":
    """A denoise mask (0 = regenerate, 1 = keep, any of ``(H, W)``, ``(1, H, W)``, ``(1, 1, H, W)``) inverted to
    1 where the image is regenerated and resized to the latents ``(1, 1, height, width)``, as InvokeAI prepares it
    (bilinear, no antialiasing)."""
    import torch.nn.functional as F

    if mask.ndim not in (2, 3, 4) or (mask.ndim > 2 and mask.shape[-3] != 1):
        raise ValueError(f"a mask of shape {tuple(mask.shape)}; expected one channel (1, H, W) or (1, 1, H, W)")
    inverted = (1.0 - mask.float()).reshape(1, 1, *mask.shape[-2:])
    return F.interpolate(inverted, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
