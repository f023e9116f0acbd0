"""FLUX.1 sampling as InvokeAI does it (after Black Forest Labs' reference code): seeded noise, the shifted
flow-matching schedule, clipping it for image-to-image, and packing latents into 2x2 patches.

Latents are ``(batch, 16, 2*ceil(h/16), 2*ceil(w/16))``; the transformer sees them packed as
``(batch, tokens, 64)`` with one ``(0, row, column)`` position id per token.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

LATENT_CHANNELS = 16
SIZE_MULTIPLE = 16  # FLUX's image sizes: the VAE's 8x times the 2x2 patches


def latent_shape(height: int, width: int, batch: int = 1) -> tuple[int, int, int, int]:
    """The latents of an image of ``height`` x ``width`` pixels: 16 channels, whole 2x2 patches."""
    return (batch, LATENT_CHANNELS, 2 * math.ceil(height / 16), 2 * math.ceil(width / 16))


def noise(seed: int, height: int, width: int, *, batch: int = 1, device: str = "cpu",
          dtype: "torch.dtype | None" = None) -> "torch.Tensor":
    """InvokeAI's FLUX noise: drawn on the CPU in float16 from the seed, then cast, so a seed gives the same noise on
    every device and dtype."""
    import torch

    drawn = torch.randn(latent_shape(height, width, batch), device="cpu", dtype=torch.float16, generator=torch.Generator("cpu").manual_seed(seed))
    return drawn.to(device=device, dtype=dtype or torch.float32)


def schedule(steps: int, image_seq_len: int, *, shift: bool, base_shift: float = 0.5,
             max_shift: float = 1.15) -> list[float]:
    """``steps + 1`` timesteps from 1 to 0; dev shifts them toward 1 by an amount that grows with the image's token
    count (schnell does not)."""
    import torch

    timesteps = torch.linspace(1, 0, steps + 1)
    if shift:
        mu = base_shift + (max_shift - base_shift) * (image_seq_len - 256) / (4096 - 256)
        timesteps = math.exp(mu) / (math.exp(mu) + (1 / timesteps - 1))
    return timesteps.tolist()


def clip_schedule(timesteps: list[float], denoising_start: float, denoising_end: float) -> list[float]:
    """The part of the schedule between ``denoising_start`` and ``denoising_end`` (fractions of the way from noise to
    image), starting and ending exactly there (InvokeAI's fractional clipping): image-to-image starts part way."""
    if not 0.0 <= denoising_start <= denoising_end <= 1.0:
        raise ValueError(f"denoising_start {denoising_start} and denoising_end {denoising_end}: expected "
                         "0 <= start <= end <= 1")
    start, end, eps = 1.0 - denoising_start, 1.0 - denoising_end, 1e-6
    first = len([t for t in timesteps if t >= start - eps]) - 1
    last = len([t for t in timesteps if t >= end - eps]) - 1
    clipped = timesteps[first:last + 1]
    clipped[0] = start
    if clipped[-1] > end + eps:
        clipped.append(end)
    return clipped


def pack(latents: "torch.Tensor") -> "torch.Tensor":
    """``(b, c, 2h, 2w)`` -> ``(b, h*w, c*4)``: each token one 2x2 patch."""
    b, c, height, width = latents.shape
    patches = latents.reshape(b, c, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (height // 2) * (width // 2), c * 4)


def unpack(tokens: "torch.Tensor", height: int, width: int) -> "torch.Tensor":
    """The inverse of `pack` for an image of ``height`` x ``width`` pixels."""
    rows, columns = math.ceil(height / 16), math.ceil(width / 16)
    b, _, features = tokens.shape
    patches = tokens.reshape(b, rows, columns, features // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(b, features // 4, rows * 2, columns * 2)


def image_ids(height: int, width: int, *, index: int = 0, row_offset: int = 0, column_offset: int = 0,
              device: str = "cpu", dtype: "torch.dtype | None" = None) -> "torch.Tensor":
    """``(tokens, 3)`` position ids ``(index, row, column)`` of the packed latents of an image: index 0 for the
    image being made, 1 for Kontext's reference images, which also sit at an offset (in tokens) on their canvas."""
    import torch

    rows, columns = math.ceil(height / 16), math.ceil(width / 16)
    ids = torch.zeros(rows, columns, 3)
    ids[..., 0] = index
    ids[..., 1] = torch.arange(rows)[:, None] + row_offset
    ids[..., 2] = torch.arange(columns)[None, :] + column_offset
    return ids.reshape(rows * columns, 3).to(device=device, dtype=dtype or torch.float32)


SCHEDULERS = ("euler", "heun", "lcm")  # InvokeAI's FLUX samplers


def flow_scheduler(name: str, steps: int, device: Any = "cpu") -> Any:
    """The diffusers scheduler InvokeAI steps with for ``heun`` (FlowMatchHeunDiscreteScheduler) or ``lcm``
    (FlowMatchLCMScheduler), set to ``steps`` steps of its own unshifted schedule as InvokeAI sets them: these
    samplers take no custom sigmas, so dev's resolution shift and an image-to-image start do not reach them."""
    from diffusers import FlowMatchHeunDiscreteScheduler, FlowMatchLCMScheduler

    classes = {"heun": FlowMatchHeunDiscreteScheduler, "lcm": FlowMatchLCMScheduler}
    if name not in classes:
        raise ValueError(f"FLUX scheduler {name!r}: expected one of {', '.join(SCHEDULERS)}")
    scheduler = classes[name](num_train_timesteps=1000)
    scheduler.set_timesteps(num_inference_steps=steps, device=device)
    return scheduler
