"""FLUX.2 sampling as InvokeAI does it: seeded noise of 32 channels, the linear sigma schedule its scheduler shifts
(exponentially, by a fixed ``mu`` of 2.02), position ids of four axes, and the VAE's batch-norm statistics that
latents are normalized by while the transformer works on them.

Latents are ``(batch, 32, 2*ceil(h/16), 2*ceil(w/16))``; the transformer sees them packed as ``(batch, tokens, 128)``
(2x2 patches, channel-major as FLUX.1's: `invokeai_provider.models.flux.sampling.pack`), with one
``(t, row, column, l)`` position id per token (t is 0 for the image being made, 10, 20, ... for reference images).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from invokeai_provider.models.flux.sampling import clip_schedule, pack, unpack

if TYPE_CHECKING:
    import torch

__all__ = ["LATENT_CHANNELS", "MU", "bn_denormalize", "bn_normalize", "bn_stats", "clip_schedule", "image_ids",
           "latent_shape", "linear_schedule", "noise", "pack", "scheduler_for", "text_ids", "unpack"]

LATENT_CHANNELS = 32
MU = 2.02  # InvokeAI's fixed schedule shift for FLUX.2 (ComfyUI's), at every size and step count
SCHEDULERS = ("euler", "heun", "lcm")


def latent_shape(height: int, width: int, batch: int = 1) -> tuple[int, int, int, int]:
    """The latents of an image of ``height`` x ``width`` pixels: 32 channels, whole 2x2 patches."""
    return (batch, LATENT_CHANNELS, 2 * math.ceil(height / 16), 2 * math.ceil(width / 16))


def noise(seed: int, height: int, width: int, *, batch: int = 1, device: Any = "cpu",
          dtype: "torch.dtype | None" = None) -> "torch.Tensor":
    """InvokeAI's FLUX.2 noise: drawn on the CPU in float16 from the seed, then cast."""
    import torch

    drawn = torch.randn(latent_shape(height, width, batch), dtype=torch.float16,
                        generator=torch.Generator("cpu").manual_seed(seed))
    return drawn.to(device=device, dtype=dtype or torch.float32)


def linear_schedule(steps: int) -> list[float]:
    """``steps`` sigmas from 1 down to 1/steps, then 0: what InvokeAI hands its FLUX.2 scheduler (which shifts
    them) and, clipped, what its image-to-image Euler steps walk as they are."""
    import numpy as np

    return [float(s) for s in np.linspace(1.0, 1 / steps, steps)] + [0.0]


def scheduler_for(name: str) -> Any:
    """The diffusers scheduler InvokeAI makes for a FLUX.2 text-to-image run: Klein's flow-matching Euler (or LCM)
    with exponential dynamic shifting, or Heun with its static shift of 3."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler, FlowMatchLCMScheduler

    if name == "heun":
        return FlowMatchHeunDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    classes = {"euler": FlowMatchEulerDiscreteScheduler, "lcm": FlowMatchLCMScheduler}
    if name not in classes:
        raise ValueError(f"FLUX.2 scheduler {name!r}: expected one of {', '.join(SCHEDULERS)}")
    return classes[name](num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                         max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
                         time_shift_type="exponential")


def image_ids(height: int, width: int, *, index: int = 0, row_offset: int = 0, column_offset: int = 0,
              device: Any = "cpu") -> "torch.Tensor":
    """``(tokens, 4)`` int64 position ids ``(index, row, column, 0)`` of an image's packed latents (``height`` and
    ``width`` in latent pixels; offsets in tokens)."""
    import torch

    rows, columns = height // 2, width // 2
    ids = torch.zeros(rows, columns, 4, dtype=torch.long, device=device)
    ids[..., 0] = index
    ids[..., 1] = torch.arange(rows, device=device)[:, None] + row_offset
    ids[..., 2] = torch.arange(columns, device=device)[None, :] + column_offset
    return ids.reshape(rows * columns, 4)


def text_ids(length: int, device: Any = "cpu") -> "torch.Tensor":
    """``(length, 4)`` int64 position ids of text tokens: only the last axis counts them."""
    import torch

    ids = torch.zeros(length, 4, dtype=torch.long, device=device)
    ids[:, 3] = torch.arange(length, device=device)
    return ids


def bn_stats(vae: Any) -> "tuple[torch.Tensor, torch.Tensor] | None":
    """The FLUX.2 VAE's batch-norm mean and standard deviation over the 128 patch channels (running statistics, no
    affine part), or None for a VAE without them."""
    import torch

    bn = getattr(vae, "bn", None)
    if bn is None or getattr(bn, "running_mean", None) is None or getattr(bn, "running_var", None) is None:
        return None
    eps = getattr(bn, "eps", 1e-4)
    return bn.running_mean.detach().float().cpu().clone(), torch.sqrt(bn.running_var.detach().float().cpu() + eps)


def bn_normalize(tokens: "torch.Tensor", stats: "tuple[torch.Tensor, torch.Tensor]") -> "torch.Tensor":
    mean, std = (s.to(tokens.device, tokens.dtype) for s in stats)
    return (tokens - mean) / std


def bn_denormalize(tokens: "torch.Tensor", stats: "tuple[torch.Tensor, torch.Tensor]") -> "torch.Tensor":
    mean, std = (s.to(tokens.device, tokens.dtype) for s in stats)
    return tokens * std + mean
