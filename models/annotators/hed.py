"""The HED (holistically-nested edge detection) network of ControlNet's soft-edge annotator.

Layer names and shapes follow the published ``ControlNetHED.pth`` (hub repo ``lllyasviel/Annotators``), so
that file loads with ``load_state_dict(strict=True)``: a learned per-channel offset ``norm`` subtracted from
the 0..255 RGB input, then five VGG-like stages (2, 2, 3, 3, 3 ReLU'd 3x3 convolutions; 2x2 max pooling
before stages 2-5), each with a 1x1 ``projection`` to one side-output channel. The edge map is the sigmoid
of the mean of the five side outputs resized to the input size (what InvokeAI's HED detector does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    import numpy as np

HED_CHECKPOINT = "ControlNetHED.pth"
# (output channels, convolutions) per stage, as in the published checkpoint.
HED_STAGES: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


class HEDStage(nn.Module):
    """``depth`` ReLU'd 3x3 convolutions, plus a 1x1 projection of the result to a one-channel edge logit."""

    def __init__(self, in_channels: int, out_channels: int, depth: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1)
                                     for i in range(depth)])
        self.projection = nn.Conv2d(out_channels, 1, 1)

    def forward(self, x: torch.Tensor, pool: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if pool:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class HEDNet(nn.Module):
    """Five stages; ``forward`` gives their five side-output logits, at 1, 1/2, ... 1/16 of the input size."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        channels = 3
        for index, (width, depth) in enumerate(HED_STAGES, start=1):
            setattr(self, f"block{index}", HEDStage(channels, width, depth))
            channels = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: [N, 3, H, W] RGB in 0..255 (not normalised; ``norm`` holds the learned offset)."""
        h = x - self.norm
        sides = []
        for index in range(1, len(HED_STAGES) + 1):
            h, side = getattr(self, f"block{index}")(h, pool=index > 1)
            sides.append(side)
        return sides


def hed_edge_map(net: HEDNet, rgb: "np.ndarray") -> "np.ndarray":
    """The soft edge map of an RGB uint8 image [H, W, 3] as uint8 [H, W] (255 = certain edge): each side
    output resized bilinearly to H x W, averaged, then a sigmoid."""
    import cv2
    import numpy as np

    height, width = rgb.shape[:2]
    device = next(net.parameters()).device
    with torch.no_grad():
        pixels = torch.from_numpy(np.array(rgb, dtype=np.float32)).to(device).permute(2, 0, 1).unsqueeze(0)
        sides = [side[0, 0].float().cpu().numpy() for side in net(pixels)]
    resized = [cv2.resize(side, (width, height), interpolation=cv2.INTER_LINEAR) for side in sides]
    logits = np.mean(np.stack(resized, axis=2), axis=2).astype(np.float64)
    probability = 1.0 / (1.0 + np.exp(-logits))
    return (probability * 255.0).clip(0, 255).astype(np.uint8)
