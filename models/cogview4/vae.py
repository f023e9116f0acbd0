"""CogView4's VAE (diffusers' ``AutoencoderKL``, 16 latent channels): latents are the VAE's scaled by its scaling
factor only (no shift), as in InvokeAI's ``cogview4_i2l`` / ``cogview4_l2i`` and ``CogView4Pipeline``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def decode(vae: Any, latents: "torch.Tensor") -> "torch.Tensor":
    """Latents ``(b, 16, h/8, w/8)`` -> an image tensor ``(b, 3, h, w)`` in [-1, 1] (clamped)."""
    import torch

    with torch.no_grad():
        scaled = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
        return vae.decode(scaled, return_dict=False)[0].float().clamp(-1, 1)


def to_pixels(image: "torch.Tensor") -> Any:
    """The first image of a decoded batch as an ``(h, w, 3)`` uint8 array, as InvokeAI converts it (truncated, not
    rounded)."""
    return (127.5 * (image[0] + 1.0)).byte().permute(1, 2, 0).cpu().numpy()


def encode(vae: Any, image: "torch.Tensor", seed: int = 0) -> "torch.Tensor":
    """An image tensor ``(b, 3, h, w)`` in [-1, 1] -> scaled latents, sampled from the VAE's posterior. InvokeAI samples
    without a generator (its TODO: seed it); here the draw is seeded, so an image always gives the same latents."""
    import torch

    with torch.no_grad():
        posterior = vae.encode(image.to(device=vae.device, dtype=vae.dtype)).latent_dist
        latents = posterior.sample(torch.Generator("cpu").manual_seed(seed))
    return (latents * vae.config.scaling_factor).float()
