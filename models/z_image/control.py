"""Z-Image ControlNets (Alibaba's "Z-Image-Turbo-Fun-Controlnet-Union" single files, which InvokeAI installs) as
diffusers' ``ZImageControlNetModel``.

A file holds only the control layers: ``control_all_x_embedder`` (the control image's latents, 16 channels in V1 or 33
in V2.0: latents, 16 reference channels and an inpaint-mask channel), a ``control_noise_refiner`` and ``control_layers``
blocks. The rest (timestep and caption embedders, the noise and context refiners, RoPE, pad tokens) is the
transformer's, lent to the ControlNet for one node's span (`borrowing`). As in InvokeAI, control block ``i`` adds its
hint after the transformer's layer ``2 * i``. Files whose refiner blocks carry hint projections (``before_proj``/
``after_proj``, version 2.1) run with diffusers' ``control_noise_refiner`` mode.

The control image is encoded by the VAE to its distribution's mode (diffusers' pipeline does the same; InvokeAI
samples it without a seed), and V2.0 files get 16 zero channels and a channel of ones ("use the control, inpaint
nothing"), as InvokeAI pads them.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch

BORROWED = ("t_scale", "t_embedder", "all_x_embedder", "cap_embedder", "rope_embedder", "noise_refiner",
            "context_refiner", "x_pad_token", "cap_pad_token")


class ZImageControlError(ValueError):
    """A file that is not a Z-Image ControlNet this provider can build."""


def controlnet_config(state: dict[str, Any]) -> dict[str, Any]:
    """The ``ZImageControlNetModel`` config read from the file's tensor shapes."""
    def count(prefix: str) -> int:
        found = {int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
        return max(found) + 1 if found else 0

    try:
        embedder = state["control_all_x_embedder.2-1.weight"]
        head_dim = state["control_layers.0.attention.norm_q.weight"].shape[0]
    except KeyError as missing:
        raise ZImageControlError(f"not a Z-Image ControlNet: no {missing} tensor") from None
    blocks, refiners = count("control_layers"), count("control_noise_refiner")
    hinted_refiner = any(k.startswith("control_noise_refiner.") and ".after_proj." in k for k in state)
    dim = embedder.shape[0]
    return dict(control_layers_places=[2 * i for i in range(blocks)], control_in_dim=embedder.shape[1] // 4,
                control_refiner_layers_places=list(range(refiners)) if hinted_refiner else None,
                add_control_noise_refiner="control_noise_refiner" if hinted_refiner else None,
                dim=dim, n_refiner_layers=refiners or 2, n_heads=dim // head_dim, n_kv_heads=dim // head_dim)


def load_controlnet(path: Path, dtype: Any) -> Any:
    """A ControlNet file as ``ZImageControlNetModel`` (original fused-attention names converted; a stray
    ``x_pad_token`` is dropped: the transformer's is used)."""
    from accelerate import init_empty_weights
    from diffusers import ZImageControlNetModel
    from safetensors.torch import load_file

    from invokeai_provider.models.z_image.loading import to_diffusers_state

    raw = load_file(str(path))
    embedder = {k: raw.pop(k) for k in list(raw) if k.startswith("control_all_x_embedder.")}  # already its name
    state = {**{k: v for k, v in to_diffusers_state(raw).items() if k != "x_pad_token"}, **embedder}
    with init_empty_weights():
        model = ZImageControlNetModel(**controlnet_config(state))
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ZImageControlError(f"{path.name}: the weights do not fit a Z-Image ControlNet: {exc}") from None
    return model.to(dtype=dtype).eval()


@contextmanager
def borrowing(controlnet: Any, transformer: Any) -> Iterator[Any]:
    """The ControlNet with the transformer's shared modules lent to it for the block, and taken back after (the
    cached ControlNet must not keep the transformer's weights alive or move them with it)."""
    from diffusers import ZImageControlNetModel

    ZImageControlNetModel.from_transformer(controlnet, transformer)
    try:
        yield controlnet
    finally:
        for name in BORROWED:
            setattr(controlnet, name, None)


@dataclass
class ZImageControl:
    """One node's control: the ControlNet, the control image's latents ``(channels, 1, h/8, w/8)`` padded to its
    input width, the hint scale and the fraction of the steps it acts in."""

    model: Any
    latents: "torch.Tensor"
    scale: float = 0.75
    begin: float = 0.0
    end: float = 1.0

    def applies(self, step: int, total: int) -> bool:
        """InvokeAI's rule: the step's fraction of the run (step index over step count) within begin..end."""
        return total == 0 or self.begin <= step / total <= self.end


def control_latents(vae: Any, image: "torch.Tensor", control_in_dim: int) -> "torch.Tensor":
    """The control image ``(1, 3, h, w)`` in [-1, 1] as the ControlNet's input ``(control_in_dim, 1, h/8, w/8)``."""
    import torch

    config = vae.config
    with torch.no_grad():
        mode = vae.encode(image.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode()
    latents = ((mode - (config.shift_factor or 0.0)) * config.scaling_factor).float()[0].unsqueeze(1)
    channels, frames, height, width = latents.shape
    missing = control_in_dim - channels
    if missing == 17:  # V2.0: reference latents (none) and the inpaint mask (1: keep, use the control)
        pad = [torch.zeros(16, frames, height, width), torch.ones(1, frames, height, width)]
        latents = torch.cat([latents, *pad])
    elif missing > 0:
        latents = torch.cat([latents, torch.zeros(missing, frames, height, width)])
    elif missing < 0:
        raise ZImageControlError(f"the ControlNet takes {control_in_dim} channels, fewer than the VAE's {channels}")
    return latents
