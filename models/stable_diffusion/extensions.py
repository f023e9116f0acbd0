"""UNet, VAE and text-encoder extensions for the span of one node: seamless tiling, FreeU and CLIP skip.

Each is a context manager that changes the (cached, shared) model on entry and puts it back on exit, so a
setting never outlives the node that asked for it. torch is imported inside the functions.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

__all__ = ["clip_skip", "freeu", "seamless"]


@contextmanager
def seamless(model: Any, axes: list[str]) -> Iterator[None]:
    """Every Conv2d pads circularly along the seamless axes for the block, so the output tiles."""
    import torch

    if not axes:
        yield
        return
    x_mode = "circular" if "x" in axes else "constant"
    y_mode = "circular" if "y" in axes else "constant"

    def forward(layer: torch.nn.Conv2d, tensor: torch.Tensor, weight: torch.Tensor,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        left, right, top, bottom = layer._reversed_padding_repeated_twice
        tensor = torch.nn.functional.pad(tensor, (left, right, 0, 0), mode=x_mode)
        tensor = torch.nn.functional.pad(tensor, (0, 0, top, bottom), mode=y_mode)
        return torch.nn.functional.conv2d(tensor, weight, bias, layer.stride, 0, layer.dilation, layer.groups)

    patched = [layer for layer in model.modules() if isinstance(layer, torch.nn.Conv2d)]
    for layer in patched:
        layer._conv_forward = forward.__get__(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer._conv_forward  # back to the class's method


@contextmanager
def freeu(unet: Any, config: Any) -> Iterator[None]:
    """FreeU's backbone/skip scaling (diffusers' implementation) for the block."""
    if config is None:
        yield
        return
    unet.enable_freeu(s1=config.s1, s2=config.s2, b1=config.b1, b2=config.b2)
    try:
        yield
    finally:
        unet.disable_freeu()


@contextmanager
def clip_skip(text_encoder: Any, skipped_layers: int) -> Iterator[None]:
    """Drops the last ``skipped_layers`` encoder layers for the duration of the block."""
    if skipped_layers <= 0:
        yield
        return
    layers = text_encoder.text_model.encoder.layers
    removed = [layers.pop(-1) for _ in range(skipped_layers)]
    try:
        yield
    finally:
        for layer in reversed(removed):
            layers.append(layer)
