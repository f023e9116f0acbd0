"""FLUX.2's VAE (diffusers' ``AutoencoderKLFlux2``, 32 latent channels): no scaling or shift on the latents, as
InvokeAI's ``flux2_vae_encode`` / ``flux2_vae_decode`` use it; the batch-norm normalization belongs to denoising
(`sampling.bn_normalize`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def decode(vae: Any, latents: "torch.Tensor") -> "torch.Tensor":
    """Latents ``(b, 32, h/8, w/8)`` -> an image tensor ``(b, 3, h, w)`` in [-1, 1] (unclamped)."""
    import torch

    with torch.no_grad():
        return vae.decode(latents.to(device=vae.device, dtype=vae.dtype), return_dict=False)[0].float()


def encode(vae: Any, image: "torch.Tensor") -> "torch.Tensor":
    """An image tensor ``(b, 3, h, w)`` in [-1, 1] -> latents: the posterior's mode, as InvokeAI encodes."""
    import torch

    with torch.no_grad():
        posterior = vae.encode(image.to(device=vae.device, dtype=vae.dtype), return_dict=False)[0]
    return posterior.mode().float()


def to_pixels(image: "torch.Tensor") -> Any:
    """The first image of a decoded batch as InvokeAI's FLUX.2 decode converts it: to [0, 1], clamped, times 255,
    truncated to uint8, ``(h, w, 3)``."""
    return ((image[0] / 2 + 0.5).clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()
