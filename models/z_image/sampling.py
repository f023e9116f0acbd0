"""Z-Image sampling as InvokeAI's ``z_image_denoise`` does it: seeded noise, the sigma schedule shifted by the image's
token count (or a given shift), and clipping it for image-to-image.

Latents are ``(batch, 16, h/8, w/8)``; the transformer cuts them into 2x2 patches itself, so an image of ``h`` x ``w``
pixels is ``(h/16) * (w/16)`` tokens.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

LATENT_CHANNELS = 16
SIZE_MULTIPLE = 16  # the VAE's 8x times the transformer's 2x2 patches
SCHEDULERS = ("euler", "heun", "lcm")  # InvokeAI's Z-Image samplers


def latent_shape(height: int, width: int, batch: int = 1) -> tuple[int, int, int, int]:
    return (batch, LATENT_CHANNELS, height // 8, width // 8)


def noise(seed: int, height: int, width: int) -> "torch.Tensor":
    """InvokeAI's Z-Image noise: float32 on the CPU from the seed, so a seed gives the same noise on every device."""
    import torch

    return torch.randn(latent_shape(height, width), dtype=torch.float32,
                       generator=torch.Generator("cpu").manual_seed(seed))


def image_tokens(height: int, width: int) -> int:
    return (height // SIZE_MULTIPLE) * (width // SIZE_MULTIPLE)


def resolution_shift(tokens: int, base_tokens: int = 256, max_tokens: int = 4096, base_shift: float = 0.5,
                     max_shift: float = 1.15) -> float:
    """The shift InvokeAI takes when none is given: ``exp(mu)``, ``mu`` growing linearly with the token count from
    0.5 at 256 tokens to 1.15 at 4096 (FLUX's rule; the model's own scheduler config is not read)."""
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return math.exp(base_shift + slope * (tokens - base_tokens))


def sigmas(shift: float, steps: int) -> list[float]:
    """``steps + 1`` sigmas from 1 to 0: ``t = 1 - i/steps`` moved toward 1 by ``shift / (shift + 1/t - 1)``."""
    values = []
    for i in range(steps + 1):
        t = 1.0 - i / steps
        values.append(0.0 if t <= 0 else 1.0 if t >= 1 else shift / (shift + (1 / t - 1)))
    return values


def clip(values: list[float], denoising_start: float, denoising_end: float) -> list[float]:
    """InvokeAI's clipping for ``denoising_start``/``denoising_end``: whole steps, cut at
    ``int(fraction * steps)`` (image-to-image starts on the step at or before the fraction)."""
    if denoising_start <= 0 and denoising_end >= 1:
        return list(values)
    steps = len(values) - 1
    return values[int(denoising_start * steps): int(denoising_end * steps) + 1]
