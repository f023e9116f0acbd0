"""What FLUX Fill and FLUX Kontext make of their images, as InvokeAI's ``flux_denoise`` prepares them.

Fill: the image with the region to fill blanked out, encoded (sampled with a generator seeded 0, as every FLUX
image encode in InvokeAI), packed, and followed on each token by the mask folded into 64 channels (one per pixel of
the 8x8 patch a latent covers): 320 channels that the Fill transformer takes after the 64 of the image it makes.

Kontext: each reference image encoded (the mode), padded to whole 2x2 patches by wrapping around, packed, and given
position ids of index 1; a second and later image is placed beside or below the ones before it, whichever keeps the
canvas closer to square, as InvokeAI (after ComfyUI) does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from invokeai_provider.models.flux import sampling
from invokeai_provider.models.flux import vae as flux_vae

if TYPE_CHECKING:
    import torch


def fill_condition(vae: Any, image: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
    """``(1, tokens, 320)`` from an image ``(1, 3, H, W)`` in [-1, 1] and a mask ``(1, H, W)``, true (1) where the
    model fills in."""
    import torch

    mask = mask.to(device=image.device, dtype=image.dtype)
    latents = flux_vae.encode_seeded(vae, image * (1.0 - mask[:, None]))
    batch, height, width = mask.shape
    folded = mask.reshape(batch, height // 8, 8, width // 8, 8).permute(0, 2, 4, 1, 3).reshape(
        batch, 64, height // 8, width // 8)
    return torch.cat([sampling.pack(latents), sampling.pack(folded.to(latents.dtype))], dim=-1)


def kontext_references(vae: Any, images: Sequence["torch.Tensor"]) -> tuple["torch.Tensor", "torch.Tensor"]:
    """The reference images' packed tokens ``(1, n, 64)`` and position ids ``(n, 3)``, from images
    ``(1, 3, h, w)`` in [-1, 1]."""
    import torch
    import torch.nn.functional as F

    tokens, ids = [], []
    canvas_h = canvas_w = 0
    for index, image in enumerate(images):
        latents = flux_vae.encode(vae, image)
        pad_h, pad_w = latents.shape[-2] % 2, latents.shape[-1] % 2
        if pad_h or pad_w:
            latents = F.pad(latents, (0, pad_w, 0, pad_h), mode="circular")
        height, width = latents.shape[-2:]
        row = column = 0
        if index == 0:
            canvas_h, canvas_w = height, width
        elif canvas_h + height > canvas_w + width:  # taller than wide if stacked: put it beside
            column, canvas_w, canvas_h = canvas_w, canvas_w + width, max(canvas_h, height)
        else:
            row, canvas_h, canvas_w = canvas_h, canvas_h + height, max(canvas_w, width)
        tokens.append(sampling.pack(latents))
        ids.append(sampling.image_ids(height * 8, width * 8, index=1, row_offset=row // 2, column_offset=column // 2))
    return torch.cat(tokens, dim=1), torch.cat(ids)
