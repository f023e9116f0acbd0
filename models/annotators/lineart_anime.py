"""The anime lineart annotator network (``netG.pth`` in ``lllyasviel/Annotators``).

A pix2pix U-Net of 8 levels built from the inside out: every level is a block whose ``model`` Sequential
holds its down path, the next level and its up path, and whose output is its input concatenated with that
(the outermost level returns the up path alone, through a tanh). Normalisation is a parameter-free
InstanceNorm, so every convolution has a bias. Names and Sequential positions (``model.model.1.model.3...``)
follow the published checkpoint (after stripping DataParallel's ``module.`` prefix). Inputs must be a
multiple of 2**levels (256) on each side.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

# The configuration of the published checkpoint.
IN_CHANNELS = 3
OUT_CHANNELS = 1
LEVELS = 8
BASE_CHANNELS = 64


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class UNetLevel(nn.Module):
    """One U-Net level: a 4x4 stride-2 convolution down, the inner levels, a 4x4 transposed convolution up."""

    def __init__(self, outer: int, inner: int, *, in_channels: Optional[int] = None,
                 submodule: Optional["UNetLevel"] = None, outermost: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        down = nn.Conv2d(in_channels or outer, inner, kernel_size=4, stride=2, padding=1)
        if outermost:
            assert submodule is not None
            layers: list[nn.Module] = [down, submodule, nn.ReLU(True),
                                       nn.ConvTranspose2d(inner * 2, outer, kernel_size=4, stride=2, padding=1),
                                       nn.Tanh()]
        elif submodule is None:  # innermost: no skip input to the up path
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True),
                      nn.ConvTranspose2d(inner, outer, kernel_size=4, stride=2, padding=1), _norm(outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down, _norm(inner), submodule, nn.ReLU(True),
                      nn.ConvTranspose2d(inner * 2, outer, kernel_size=4, stride=2, padding=1), _norm(outer)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y if self.outermost else torch.cat([x, y], 1)


class LineartAnimeUNet(nn.Module):
    """RGB in [-1, 1] -> a one-channel map in [-1, 1] (1 = background, -1 = line), the input's size."""

    def __init__(self, in_channels: int = IN_CHANNELS, out_channels: int = OUT_CHANNELS, levels: int = LEVELS,
                 base: int = BASE_CHANNELS) -> None:
        super().__init__()
        if levels < 5:
            raise ValueError(f"a lineart U-Net has at least 5 levels, got {levels}")
        widest = base * 8
        level = UNetLevel(widest, widest)
        for _ in range(levels - 5):
            level = UNetLevel(widest, widest, submodule=level)
        for outer, inner in ((base * 4, base * 8), (base * 2, base * 4), (base, base * 2)):
            level = UNetLevel(outer, inner, submodule=level)
        self.model = UNetLevel(out_channels, base, in_channels=in_channels, submodule=level, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
