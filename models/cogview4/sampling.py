"""CogView4 sampling as InvokeAI's ``cogview4_denoise`` does it: seeded noise, and a schedule of timesteps from 1 to 0
that the transformer sees unshifted while the Euler steps move along sigmas shifted by the image's token count.

InvokeAI's schedule is not diffusers' default for ``CogView4Pipeline`` (which spaces integer timesteps from 1000 to
1 and has no final 0 step): ``steps + 1`` evenly spaced timesteps from 1 to 0, clipped for image-to-image, each
mapped to a sigma by the linear time shift ``mu / (mu + (1/t - 1))`` with ``mu = 0.75 * sqrt(tokens / 256) + 0.25``
(the pipeline's `calculate_shift` with CogView4-6B's scheduler settings).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from invokeai_provider.models.flux.sampling import clip_schedule

if TYPE_CHECKING:
    import torch

__all__ = ["LATENT_SCALE", "SIZE_MULTIPLE", "clip_schedule", "image_seq_len", "latent_shape", "noise", "schedule",
           "shift_mu", "sigmas_of", "timesteps"]

LATENT_SCALE = 8  # the VAE's downsampling (InvokeAI's LATENT_SCALE_FACTOR)
SIZE_MULTIPLE = 32  # CogView4's image sizes: 8x the VAE, 2x2 patches, and an even number of patches per side


def latent_shape(height: int, width: int, channels: int = 16, batch: int = 1) -> tuple[int, int, int, int]:
    return (batch, channels, height // LATENT_SCALE, width // LATENT_SCALE)


def noise(seed: int, height: int, width: int, channels: int = 16, *, device: str = "cpu",
          dtype: "torch.dtype | None" = None) -> "torch.Tensor":
    """InvokeAI's CogView4 noise: drawn on the CPU in float16 from the seed, then cast, so a seed gives the same noise
    on every device and dtype."""
    import torch

    drawn = torch.randn(latent_shape(height, width, channels), device="cpu", dtype=torch.float16,
                        generator=torch.Generator("cpu").manual_seed(seed))
    return drawn.to(device=device, dtype=dtype or torch.float32)


def image_seq_len(height: int, width: int, patch_size: int) -> int:
    """The image's token count: latent pixels over the transformer's patch area."""
    return (height // LATENT_SCALE) * (width // LATENT_SCALE) // (patch_size ** 2)


def shift_mu(seq_len: int, base_seq_len: int = 256, base_shift: float = 0.25, max_shift: float = 0.75) -> float:
    return math.sqrt(seq_len / base_seq_len) * max_shift + base_shift


def sigmas_of(timesteps: list[float], mu: float) -> list[float]:
    """The linear time shift of each timestep (1 stays 1, 0 stays 0)."""
    import torch

    t = torch.tensor(timesteps)
    return (mu / (mu + (1 / t - 1) ** 1.0)).tolist()


def timesteps(steps: int, denoising_start: float = 0.0, denoising_end: float = 1.0) -> list[float]:
    """``steps + 1`` timesteps from 1 to 0, clipped to the denoising range."""
    import torch

    return clip_schedule(torch.linspace(1, 0, steps + 1).tolist(), denoising_start, denoising_end)


def schedule(steps: int, seq_len: int, denoising_start: float = 0.0,
             denoising_end: float = 1.0) -> tuple[list[float], list[float]]:
    """The timesteps of `timesteps` and their shifted sigmas."""
    clipped = timesteps(steps, denoising_start, denoising_end)
    return clipped, sigmas_of(clipped, shift_mu(seq_len))
