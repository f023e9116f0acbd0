"""FLUX.2 Klein's regional prompts, as InvokeAI builds them: the prompts' tokens side by side, and one attention
mask over ``[text tokens, image tokens]`` for every block of the positive pass. A masked prompt's tokens and its
region's image tokens see each other; unmasked (global) prompts see only the background (what no region covers);
image tokens see their own region and the background sees itself. Without any mask there is no attention mask."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch


def region_mask(mask: "torch.Tensor", packed_h: int, packed_w: int) -> "torch.Tensor":
    """A prompt's mask (bool or float, ``(1, H, W)`` or ``(H, W)``) on the packed latent grid (nearest), flattened to
    ``(tokens,)`` floats."""
    import torch
    import torch.nn.functional as F

    mask = mask.float() if mask.dtype == torch.bool else mask.float().clamp(0, 1)
    mask = mask.reshape(1, 1, *mask.shape[-2:])
    return F.interpolate(mask, size=(packed_h, packed_w), mode="nearest").flatten()


def attention_mask(lengths: list[int], masks: list[Optional["torch.Tensor"]],
                   image_tokens: int) -> Optional["torch.Tensor"]:
    """The boolean ``(S, S)`` mask (S = text + image tokens) for prompts of ``lengths`` tokens with their region
    masks (`region_mask`, None for a global prompt); None when no prompt has a mask."""
    import torch

    regions = [m for m in masks if m is not None]
    if not regions:
        return None
    background = torch.ones(image_tokens)
    for region in regions:
        background = background * (1 - region)
    text = sum(lengths)
    full = torch.zeros(text + image_tokens, text + image_tokens)
    start = 0
    for length, region in zip(lengths, masks):
        end = start + length
        full[start:end, start:end] = 1.0
        seen = region if region is not None else background
        full[start:end, text:] = seen.view(1, image_tokens)
        full[text:, start:end] = seen.view(image_tokens, 1)
        if region is not None:
            full[text:, text:] += region.view(image_tokens, 1) @ region.view(1, image_tokens)
        start = end
    full[text:, text:] += background.view(image_tokens, 1)
    full[text:, text:] += background.view(1, image_tokens)
    return full > 0.5
