"""VAE decoding of ``l2i``, for one item or for several decoded in one pass.

The latents of items with the same ``batch_key`` (the same VAE as loaded, options and latent shape) go through
the decoder as one batch, as a pipeline called with several prompts decodes them; each item gets its own image
tensor back (up to the rounding of batched kernels), so ``run_decode([item])`` is exactly the unbatched path.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Union

if TYPE_CHECKING:
    import torch

Outcome = Union["torch.Tensor", BaseException]


@dataclass(eq=False)
class DecodeItem:
    """One l2i node's decode: ``open_vae`` enters its VAE (loaded, seamless, upcast, tiled as asked); a batch
    runs under its first item's, which is why items only batch when ``batch_key`` is equal."""

    open_vae: Callable[[], AbstractContextManager[Any]]
    vae_spec: dict[str, Any]  # the VAE field and the node's decode options
    latents: "torch.Tensor"

    def batch_key(self) -> str:
        return json.dumps({"vae": self.vae_spec, "latents": list(self.latents.shape)}, sort_keys=True)


def run_decode(items: list[DecodeItem]) -> list[Outcome]:
    """Each item's image as a [C, H, W] float tensor in [0, 1] on the CPU."""
    import torch

    with items[0].open_vae() as vae, torch.no_grad():
        latents = torch.cat([item.latents for item in items]).to(device=vae.device, dtype=vae.dtype)
        decoded = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        decoded = (decoded / 2 + 0.5).clamp(0, 1).float().cpu()
    return list(decoded)


def decode_alone(item: DecodeItem) -> "torch.Tensor":
    [outcome] = run_decode([item])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
