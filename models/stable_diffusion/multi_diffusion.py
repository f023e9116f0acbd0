"""Multi-Diffusion over latent tiles, as InvokeAI's ``tiled_multi_diffusion_denoise_latents`` runs it
(https://arxiv.org/abs/2302.08113).

Every tile is a :class:`~invokeai_provider.models.stable_diffusion.denoise_loop.DenoiseItem` of its own: its crop
of the latents and noise, its ControlNets' control images cropped to it, and its own copy of the scheduler.
At each step every tile runs the UNet (with guidance and ControlNets) and its scheduler's step; the tiles'
stepped latents are then blended into the whole, each tile weighted 1 inside and by a linear ramp (0 at its
edge up to 1) across the strip it shares with a neighbour, and each tile goes on from its crop of the blend.

A scheduler per tile is InvokeAI's answer to schedulers with state: DPM++ multistep and the like keep the
model outputs of earlier steps, and each tile's copy keeps its own tile's, so every copy steps once per
timestep and sees one consistent history. (That history is the tile's unblended prediction, as in InvokeAI.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from invokeai_provider.models.stable_diffusion.controlnet import control_residuals

if TYPE_CHECKING:
    import torch

    from invokeai_provider.core.context import InvocationContext
    from invokeai_provider.models.image_util.tiling import Tile
    from invokeai_provider.models.stable_diffusion.denoise_loop import DenoiseItem


class TileContext:
    """What a tile's item sees as its node context: progress checks for cancelling but reports nothing, since
    the loop reports each step once for all tiles."""

    def __init__(self, context: "InvocationContext") -> None:
        self._context = context
        self.util = self

    def signal_progress(self, message: str, percentage: Any = None, **extra: Any) -> None:
        self._context.util.raise_if_canceled()


def crop(tensor: "torch.Tensor", tile: "Tile", scale: int = 1) -> "torch.Tensor":
    """A (N, C, H, W) tensor's part under a tile (``scale``: pixels per latent for an image-space tensor)."""
    box = tile.coords
    return tensor[:, :, box.top * scale:box.bottom * scale, box.left * scale:box.right * scale]


def region_weight(tile: "Tile", device: Any) -> "torch.Tensor":
    """A tile's blending weight, (1, 1, h, w): 1, ramping linearly from 0 at an edge it shares with a neighbour
    to 1 across the overlap on that side (the ramps multiply in corners); image edges are not ramped."""
    import torch

    box, overlap = tile.coords, tile.overlap
    weight = torch.ones((1, 1, box.bottom - box.top, box.right - box.left), device=device)
    if overlap.left > 0:
        weight[..., :, :overlap.left] *= torch.linspace(0, 1, overlap.left, device=device).view(1, -1)
    if overlap.top > 0:
        weight[..., :overlap.top, :] *= torch.linspace(0, 1, overlap.top, device=device).view(-1, 1)
    if overlap.right > 0:
        weight[..., :, -overlap.right:] *= torch.linspace(1, 0, overlap.right, device=device).view(1, -1)
    if overlap.bottom > 0:
        weight[..., -overlap.bottom:, :] *= torch.linspace(1, 0, overlap.bottom, device=device).view(-1, 1)
    return weight


def multi_diffusion_denoise(unet: Any, items: Sequence["DenoiseItem"], tiles: Sequence["Tile"],
                            latents_shape: Sequence[int], context: "InvocationContext") -> "torch.Tensor":
    """Denoises the tiles' items together as one image of ``latents_shape``; returns its latents on the CPU.

    The items share one timestep schedule. Items without noise start from their latents as given (already noised,
    as for a refiner), as InvokeAI does when no noise is connected. The items' ControlNets (``item.controls``) must
    be loaded, with their images cropped to the tile.
    """
    import torch

    device, dtype = unet.device, unet.dtype
    for item in items:
        item.start(unet, device, dtype)
    shared_kwargs = items[0]._step_kwargs  # one step generator for all tiles, in tile order (InvokeAI's)
    weights = [region_weight(tile, device) for tile in tiles]
    merged = torch.zeros(tuple(latents_shape), device=device, dtype=torch.float32)
    for item, tile in zip(items, tiles):
        item._step_kwargs = shared_kwargs
        crop(merged, tile)[...] = item.latents
    timesteps = items[0].timesteps
    total = len(timesteps)
    for index, t in enumerate(timesteps):
        summed = torch.zeros_like(merged)
        weight_sum = torch.zeros((1, 1, *merged.shape[-2:]), device=device)
        for item, tile, weight in zip(items, tiles, weights):
            sample = item.model_input(t).to(dtype)
            embeds, added = item._embeds, item._added
            encoder_mask = item._encoder_mask  # where the two halves' prompts differ in length
            down = mid = None
            if item.controls:
                down, mid = control_residuals(item.controls, index, total, model_input=sample, timestep=t,
                                              embeds=embeds, added=added)
            prediction = unet(sample, t, encoder_hidden_states=embeds, added_cond_kwargs=added or None,
                              encoder_attention_mask=encoder_mask, down_block_additional_residuals=down,
                              mid_block_additional_residual=mid).sample.float()
            item.step(index, t, prediction)
            crop(summed, tile)[...] += item.latents * weight
            crop(weight_sum, tile)[...] += weight
        merged = torch.where(weight_sum > 0, summed / weight_sum, merged)
        for item, tile in zip(items, tiles):
            item.latents = crop(merged, tile).clone()
        context.util.signal_progress(f"Denoising step {index + 1}/{total}", (index + 1) / total, step=index + 1,
                                     total_steps=total)
    return merged.detach().to("cpu")
