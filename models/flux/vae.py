"""FLUX.1's VAE (diffusers' ``AutoencoderKL`` with 16 latent channels): latents are scaled and shifted, as in
InvokeAI's ``flux_vae_encode`` / ``flux_vae_decode``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import torch


def decode(vae: Any, latents: "torch.Tensor") -> "torch.Tensor":
    """Latents ``(b, 16, h/8, w/8)`` -> an image tensor ``(b, 3, h, w)`` in [-1, 1]."""
    import torch

    config = vae.config
    scaled = latents.to(device=vae.device, dtype=vae.dtype) / config.scaling_factor + (config.shift_factor or 0.0)
    with torch.no_grad():
        return vae.decode(scaled, return_dict=False)[0].float()


def encode(vae: Any, image: "torch.Tensor", *, generator: Optional["torch.Generator"] = None) -> "torch.Tensor":
    """An image tensor ``(b, 3, h, w)`` in [-1, 1] -> latents: sampled with ``generator``, else the mode."""
    import torch

    config = vae.config
    with torch.no_grad():
        posterior = vae.encode(image.to(device=vae.device, dtype=vae.dtype)).latent_dist
        latents = posterior.sample(generator) if generator is not None else posterior.mode()
    return ((latents - (config.shift_factor or 0.0)) * config.scaling_factor).float()


def encode_seeded(vae: Any, image: "torch.Tensor") -> "torch.Tensor":
    """Latents as InvokeAI encodes every FLUX image (``flux_vae_encode``, Fill, ControlNets): sampled with a
    generator seeded 0, so the same image always gives the same latents."""
    import torch

    return encode(vae, image, generator=torch.Generator("cpu").manual_seed(0))
