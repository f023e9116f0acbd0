"""RRDBNet, the ESRGAN / Real-ESRGAN super-resolution network, and the padded, optionally tiled inference
InvokeAI's ``esrgan`` node runs it with. Its RRDB block is also the one of the PBR-maps generator
(:mod:`invokeai_provider.models.upscalers.pbr`), whose checkpoints name its layers the older ESRGAN way.

Parameter names and shapes follow the published BasicSR-format checkpoints (``RealESRGAN_x4plus.pth``,
``RealESRGAN_x4plus_anime_6B.pth``, ``ESRGAN_SRx4_DF2KOST_official-ff704c30.pth``, ``RealESRGAN_x2plus.pth``),
so they load with ``strict=True``. The x2 model folds each 2x2 pixel block into channels before the trunk
(12 input channels), so its trunk sees the image at half size and the two x2 upsamplings give x2 overall.
torch is imported at module level: import this module only where torch is wanted.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from invokeai_provider.models.image_util.tiling import calc_tiles_grid, tiled_inference

# InvokeAI's padding: the image is reflect-padded by PRE_PAD px on the right and bottom before inference (and
# the matching output cropped off), and each tile is cut with TILE_PAD px of context on every side.
PRE_PAD = 10
TILE_PAD = 10


class DenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier conv's output (convs 1-4 followed by a
    0.2 leaky ReLU); the result is added back scaled by 0.2 (as the checkpoints were trained).

    ``old_layout``: each conv sits in a one-entry Sequential, so its parameters are ``conv<j>.0.*`` as in the
    "old" ESRGAN checkpoints (where ``.1`` was the parameterless activation), not ``conv<j>.*``."""

    def __init__(self, features: int = 64, growth: int = 32, old_layout: bool = False) -> None:
        super().__init__()
        for i in range(5):
            out = features if i == 4 else growth
            conv = nn.Conv2d(features + i * growth, out, 3, 1, 1)
            setattr(self, f"conv{i + 1}", nn.Sequential(conv) if old_layout else conv)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = [x]
        for i in range(1, 5):
            seen.append(self.act(getattr(self, f"conv{i}")(torch.cat(seen, 1))))
        return x + 0.2 * self.conv5(torch.cat(seen, 1))


class RRDB(nn.Module):
    """Three dense blocks in a row with their own 0.2-scaled residual around them: ``rdb1``-``rdb3``, or with
    ``old_layout`` ``RDB1``-``RDB3`` holding old-layout dense blocks (see :class:`DenseBlock`)."""

    def __init__(self, features: int = 64, growth: int = 32, old_layout: bool = False) -> None:
        super().__init__()
        self.block_names = tuple(f"{'RDB' if old_layout else 'rdb'}{k}" for k in (1, 2, 3))
        for name in self.block_names:
            setattr(self, name, DenseBlock(features, growth, old_layout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for name in self.block_names:
            out = getattr(self, name)(out)
        return x + 0.2 * out


class RRDBNet(nn.Module):
    """Trunk of ``blocks`` RRDBs between a first conv and a body conv (with a long skip), then two nearest x2
    upsamplings each followed by a conv, and two output convs. ``scale`` 2 or 1 space-to-depth the input by 2
    or 4 first, so the output is ``scale`` times the input."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, scale: int = 4, features: int = 64,
                 blocks: int = 23, growth: int = 32) -> None:
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet scale must be 1, 2 or 4, got {scale}")
        self.scale = scale
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(in_channels * self.unshuffle ** 2, features, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(features, growth) for _ in range(blocks)))
        self.conv_body = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_hr = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_last = nn.Conv2d(features, out_channels, 3, 1, 1)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:  # channel order c, dy, dx: as the checkpoints' conv_first expects
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.act(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.act(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.act(self.conv_hr(feat)))


# The networks InvokeAI builds for each checkpoint it offers: (scale, RRDB blocks).
ESRGAN_ARCHITECTURES: dict[str, tuple[int, int]] = {
    "RealESRGAN_x4plus.pth": (4, 23),
    "RealESRGAN_x4plus_anime_6B.pth": (4, 6),
    "ESRGAN_SRx4_DF2KOST_official-ff704c30.pth": (4, 23),
    "RealESRGAN_x2plus.pth": (2, 23),
}


def build_esrgan(model_name: str) -> RRDBNet:
    """The (randomly initialised) RRDBNet whose layout the named checkpoint has."""
    scale, blocks = ESRGAN_ARCHITECTURES[model_name]
    return RRDBNet(3, 3, scale=scale, features=64, blocks=blocks, growth=32)


def unwrap_checkpoint(checkpoint: Any) -> Any:
    """The state dict of a BasicSR checkpoint: under ``params_ema`` (preferred, as InvokeAI does) or
    ``params``. A flat dict (a ``.safetensors`` file) is taken as is, with a ``params_ema.`` / ``params.``
    key prefix dropped."""
    if not isinstance(checkpoint, dict):
        return checkpoint
    for key in ("params_ema", "params"):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    for key in ("params_ema.", "params."):
        if checkpoint and all(isinstance(k, str) and k.startswith(key) for k in checkpoint):
            return {k[len(key):]: v for k, v in checkpoint.items()}
    return checkpoint


def _pad(x: torch.Tensor, right: int, bottom: int) -> torch.Tensor:
    """Right/bottom reflect padding; replicate where the image is too small to reflect (InvokeAI fails
    there)."""
    if right == 0 and bottom == 0:
        return x
    mode = "reflect" if right < x.shape[-1] and bottom < x.shape[-2] else "replicate"
    return F.pad(x, (0, right, 0, bottom), mode)


def _run(net: RRDBNet, x: torch.Tensor) -> torch.Tensor:
    """``net(x)``, padding a tile whose sides the space-to-depth can't divide (odd tile sizes of the x2 model,
    which crash in InvokeAI) and cropping the output back."""
    mod = net.unshuffle
    height, width = x.shape[-2:]
    bottom, right = -height % mod, -width % mod
    out = net(_pad(x, right, bottom))
    return out[..., : height * net.scale, : width * net.scale]


def upscale(net: RRDBNet, image: torch.Tensor, tile_size: int = 0, tile_pad: int = TILE_PAD,
            pre_pad: int = PRE_PAD) -> torch.Tensor:
    """``image`` (1 x C x H x W, values 0..1) upscaled by ``net.scale``, clamped to 0..1.

    As InvokeAI's RealESRGAN wrapper: reflect pre-padding of the right and bottom edges (cropped off after),
    and with ``tile_size`` > 0 the padded image is cut into ``tile_size`` squares, each run with
    ``tile_pad`` px of surrounding context and only its own area pasted into the output
    (:func:`~invokeai_provider.models.image_util.tiling.tiled_inference`); 0 runs the whole image at once.
    """
    height, width = image.shape[-2:]
    padded = _pad(image, min(pre_pad, width - 1), min(pre_pad, height - 1))
    mod = net.unshuffle
    padded = _pad(padded, -padded.shape[-1] % mod, -padded.shape[-2] % mod)
    scale = net.scale
    with torch.no_grad():
        if tile_size <= 0:
            out = _run(net, padded)
        else:
            _, _, ph, pw = padded.shape
            out = padded.new_zeros((padded.shape[0], padded.shape[1], ph * scale, pw * scale))
            tiled_inference(lambda crop: _run(net, crop), padded, out, calc_tiles_grid(ph, pw, tile_size),
                            scale=scale, context=tile_pad, channels_last=False)
    return out[..., : height * scale, : width * scale].clamp_(0, 1)

