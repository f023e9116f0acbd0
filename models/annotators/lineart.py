"""The lineart annotator network (``sk_model.pth`` / ``sk_model2.pth`` in ``lllyasviel/Annotators``).

A CycleGAN-style image-to-image generator: a 7x7 stem, two stride-2 downsamplings, residual blocks, two
transposed-conv upsamplings and a 7x7 head with a sigmoid. The attribute names and Sequential positions
(``model0.1``, ``model2.<i>.conv_block.5``, ...) are those of the published checkpoints, so they load
with ``load_state_dict(strict=True)``. InstanceNorm layers carry no parameters. The fine and the coarse
checkpoints share this architecture (3 residual blocks).
"""

from __future__ import annotations

import torch
from torch import nn

# The configuration both published checkpoints were trained with.
IN_CHANNELS = 3
OUT_CHANNELS = 1
RESIDUAL_BLOCKS = 3
BASE_CHANNELS = 64


class ResidualBlock(nn.Module):
    """Two reflect-padded 3x3 convolutions added back onto the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _down(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.InstanceNorm2d(cout), nn.ReLU(True)]


def _up(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(cout),
            nn.ReLU(True)]


class LineartGenerator(nn.Module):
    """RGB in [0, 1] -> a one-channel map in [0, 1] (1 = background, 0 = line) of the input size rounded up
    to a multiple of 4."""

    def __init__(self, in_channels: int = IN_CHANNELS, out_channels: int = OUT_CHANNELS,
                 residual_blocks: int = RESIDUAL_BLOCKS, base: int = BASE_CHANNELS) -> None:
        super().__init__()
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_channels, base, 7), nn.InstanceNorm2d(base),
                                    nn.ReLU(True))
        self.model1 = nn.Sequential(*_down(base, base * 2), *_down(base * 2, base * 4))
        self.model2 = nn.Sequential(*(ResidualBlock(base * 4) for _ in range(residual_blocks)))
        self.model3 = nn.Sequential(*_up(base * 4, base * 2), *_up(base * 2, base))
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(base, out_channels, 7), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in (self.model0, self.model1, self.model2, self.model3, self.model4):
            x = stage(x)
        return x
