"""The 1x ESRGAN-style (RRDB) generator behind InvokeAI's ``pbr_maps`` node, as in the two checkpoints of the
hub repository ``InvokeAI/pbr-material-maps``: ``normal_map_generator.safetensors`` (an RGB normal map) and
``franken_map_generator.safetensors`` (displacement and roughness in two of its three output channels).

Parameter names follow the "old" ESRGAN layout those files use, so they load with ``strict=True``:
``model.0`` is the first conv, ``model.1.sub.<i>`` (i < 12) are the residual-in-residual dense blocks and
``model.1.sub.12`` the conv closing the long skip connection, then ``model.2`` (conv), ``model.3`` (leaky
ReLU) and ``model.4`` (the output conv). Inside a block, ``RDB<k>.conv<j>.0`` is a conv; convs 1-4 are
followed by a leaky ReLU (slope 0.2), conv 5 is not. The blocks are ESRGAN's
(:class:`~invokeai_provider.models.upscalers.rrdb.RRDB` with ``old_layout``). The scale is 1: no upsampling
layers.

Pixels go in as floats in [0, 1], channels in BGR order (the networks were trained through OpenCV), and come
out in the same scale; :func:`run_tiled` handles that and the tiling.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from invokeai_provider.models.image_util.tiling import calc_tiles_grid, tiled_inference
from invokeai_provider.models.upscalers.rrdb import RRDB

NORMAL_MAP_CHECKPOINT = "normal_map_generator.safetensors"
OTHER_MAPS_CHECKPOINT = "franken_map_generator.safetensors"
PBR_REPO = "InvokeAI/pbr-material-maps"


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class _Shortcut(nn.Module):
    """``x + sub(x)``: the long skip connection around the trunk (the checkpoint names it ``sub``)."""

    def __init__(self, sub: nn.Module) -> None:
        super().__init__()
        self.sub = sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sub(x)


class PBRNet(nn.Module):
    """The RRDB generator with InvokeAI's settings: 3 -> 3 channels, 32 features, 12 blocks, growth 32,
    scale 1. The sizes are arguments only so tests can build smaller instances."""

    def __init__(self, features: int = 32, blocks: int = 12, growth: int = 32, in_channels: int = 3,
                 out_channels: int = 3) -> None:
        super().__init__()
        trunk = nn.Sequential(*[RRDB(features, growth, old_layout=True) for _ in range(blocks)],
                              _conv(features, features))
        self.model = nn.Sequential(_conv(in_channels, features), _Shortcut(trunk), _conv(features, features),
                                   nn.LeakyReLU(0.2, inplace=True), _conv(features, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _predict(net: nn.Module, rgb: np.ndarray) -> np.ndarray:
    """One (H, W, 3) uint8 RGB crop through the network: an (H, W, 3) uint8 array in the network's own output
    channel order, rounded from [0, 1] to 0..255."""
    parameter = next(net.parameters())
    bgr = np.ascontiguousarray(rgb[..., ::-1], dtype=np.float32) / 255.0
    x = torch.from_numpy(bgr).permute(2, 0, 1).unsqueeze(0).to(device=parameter.device, dtype=parameter.dtype)
    with torch.no_grad():
        y = net(x)[0].float().clamp(0.0, 1.0).permute(1, 2, 0).cpu().numpy()
    return np.round(y * 255.0).astype(np.uint8)


def run_tiled(net: nn.Module, rgb: np.ndarray, tile_size: int) -> np.ndarray:
    """The network's output over the whole (H, W, 3) uint8 RGB image.

    An image larger than ``tile_size`` on either side is cut into a grid of ``tile_size`` squares (the last
    row and column may be smaller); each goes through the network with a margin of an eighth of the tile
    (rounded up, where the image has pixels) so the convs see context, and only its own square is kept.
    """
    height, width = rgb.shape[:2]
    if height <= tile_size and width <= tile_size:
        return _predict(net, rgb)
    out = np.zeros((height, width, 3), dtype=np.uint8)
    return tiled_inference(lambda crop: _predict(net, crop), rgb, out, calc_tiles_grid(height, width, tile_size),
                           context=math.ceil(tile_size * 0.125))

