"""PiDiNet (pixel difference networks, Su et al. 2021), the lightweight soft-edge annotator of ControlNet.

Layer names and shapes follow the published ``table5_pidinet.pth`` (hub repo ``lllyasviel/Annotators``):
the "carv4" layout (each of the four stages cycles central / angular / radial difference / vanilla
convolutions), 60 base channels, compact dilation modules of 24 channels and spatial attention on every
stage. That file is a training checkpoint: the weights sit under ``"state_dict"`` with the ``module.``
prefix DataParallel adds; :func:`pidi_state_dict` unwraps both.

A pixel difference convolution convolves differences of neighbouring pixels instead of the pixels. Each
kind equals a plain convolution with a kernel derived from the learned one, which is how it is computed here:

- ``cv``: the kernel as learned;
- ``cd`` (central): every tap minus the centre pixel, i.e. the centre tap less the sum of the kernel;
- ``ad`` (angular): each tap minus its clockwise neighbour on the 3x3 ring;
- ``rd`` (radial): a 5x5 kernel, the outer ring's pixels minus the inner ring's (taps 1..8 of the 3x3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    import numpy as np

PIDI_CHECKPOINT = "table5_pidinet.pth"
# The difference kind of the initial convolution and of each block's depthwise convolution ("carv4").
CARV4: tuple[str, ...] = ("cd", "ad", "rd", "cv") * 4
PIDI_CHANNELS = 60
PIDI_DILATION_CHANNELS = 24

# Flattened 3x3 tap that each tap is compared with in an angular difference (its clockwise neighbour).
_ANGULAR_PARTNER = (3, 0, 1, 6, 4, 2, 7, 8, 5)
# Radial difference: where taps 1..8 land on the outer and on the inner ring of a flattened 5x5 kernel.
_RADIAL_OUTER = (0, 2, 4, 10, 14, 20, 22, 24)
_RADIAL_INNER = (6, 7, 8, 11, 13, 16, 17, 18)


def difference_kernel(kind: str, weight: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The plain-convolution kernel (and its padding) equal to a ``kind`` pixel difference convolution
    with the learned 3x3 ``weight`` [out, in/groups, 3, 3]."""
    if kind == "cv":
        return weight, 1
    out_channels, in_channels = weight.shape[:2]
    flat = weight.reshape(out_channels, in_channels, 9)
    if kind == "cd":
        kernel = flat.clone()
        kernel[:, :, 4] = flat[:, :, 4] - flat.sum(dim=2)
        return kernel.reshape(weight.shape), 1
    if kind == "ad":
        return (flat - flat[:, :, list(_ANGULAR_PARTNER)]).reshape(weight.shape), 1
    if kind == "rd":
        kernel = weight.new_zeros(out_channels, in_channels, 25)
        kernel[:, :, list(_RADIAL_OUTER)] = flat[:, :, 1:]
        kernel[:, :, list(_RADIAL_INNER)] = -flat[:, :, 1:]
        return kernel.reshape(out_channels, in_channels, 5, 5), 2
    raise ValueError(f"unknown pixel difference kind {kind!r} (expected cv, cd, ad or rd)")


class PixelDifferenceConv2d(nn.Module):
    """A 3x3 bias-free convolution over pixel differences of kind ``kind`` (stride 1, size kept)."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, groups: int = 1) -> None:
        super().__init__()
        if kind not in ("cv", "cd", "ad", "rd"):
            raise ValueError(f"unknown pixel difference kind {kind!r} (expected cv, cd, ad or rd)")
        self.kind = kind
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, padding = difference_kernel(self.kind, self.weight)
        return F.conv2d(x, kernel, padding=padding, groups=self.groups)


class PDCBlock(nn.Module):
    """Depthwise pixel difference conv, ReLU, pointwise conv, plus the input (a residual block); a block
    with ``stride`` 2 max-pools first and projects the shortcut with a 1x1 convolution."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)
        self.conv1 = PixelDifferenceConv2d(kind, in_channels, in_channels, groups=in_channels)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        y = self.conv2(F.relu(self.conv1(x)))
        return y + (self.shortcut(x) if self.stride > 1 else x)


class CDCM(nn.Module):
    """Compact dilation convolution module: ReLU, 1x1 to ``out_channels``, then the sum of four 3x3
    convolutions dilated 5, 7, 9 and 11 (a wide receptive field for little compute)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1)
        for index, dilation in enumerate((5, 7, 9, 11), start=1):
            setattr(self, f"conv2_{index}", nn.Conv2d(out_channels, out_channels, 3, dilation=dilation,
                                                      padding=dilation, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(x))
        return sum(getattr(self, f"conv2_{index}")(x) for index in range(1, 5))


class CSAM(nn.Module):
    """Compact spatial attention: the input scaled per pixel by a sigmoid map from a 4-channel bottleneck."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(F.relu(x))))


class MapReduce(nn.Module):
    """A 1x1 convolution of a stage's features to one edge-logit channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PiDiNet(nn.Module):
    """Four stages (C, 2C, 4C, 4C channels; 1, 1/2, 1/4, 1/8 size), each reduced through a CDCM, a CSAM and a
    1x1 map to a side edge logit, upsampled to the input size; a 1x1 ``classifier`` fuses the four.

    ``forward`` gives the sigmoid of the four side outputs and, last, of the fused map (the edge map)."""

    def __init__(self, kinds: tuple[str, ...] = CARV4, channels: int = PIDI_CHANNELS,
                 dilation_channels: int = PIDI_DILATION_CHANNELS) -> None:
        super().__init__()
        if len(kinds) != 16:
            raise ValueError(f"PiDiNet needs 16 convolution kinds, got {len(kinds)}")
        self.init_block = PixelDifferenceConv2d(kinds[0], 3, channels)
        stage_channels = (channels, 2 * channels, 4 * channels, 4 * channels)
        layer, previous = 1, channels
        for stage, (width, blocks) in enumerate(zip(stage_channels, (3, 4, 4, 4)), start=1):
            for block in range(1, blocks + 1):
                stride = 2 if stage > 1 and block == 1 else 1
                setattr(self, f"block{stage}_{block}", PDCBlock(kinds[layer], previous, width, stride=stride))
                previous, layer = width, layer + 1
        self.stage_blocks = (3, 4, 4, 4)
        self.dilations = nn.ModuleList(CDCM(width, dilation_channels) for width in stage_channels)
        self.attentions = nn.ModuleList(CSAM(dilation_channels) for _ in stage_channels)
        self.conv_reduces = nn.ModuleList(MapReduce(dilation_channels) for _ in stage_channels)
        self.classifier = nn.Conv2d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: [N, 3, H, W] BGR in 0..1 (the channel order the network was trained on)."""
        height, width = x.shape[2:]
        h = self.init_block(x)
        sides = []
        for stage, blocks in enumerate(self.stage_blocks, start=1):
            for block in range(1, blocks + 1):
                h = getattr(self, f"block{stage}_{block}")(h)
            reduced = self.conv_reduces[stage - 1](self.attentions[stage - 1](self.dilations[stage - 1](h)))
            sides.append(F.interpolate(reduced, (height, width), mode="bilinear", align_corners=False))
        fused = self.classifier(torch.cat(sides, dim=1))
        return [torch.sigmoid(side) for side in (*sides, fused)]


def pidi_state_dict(checkpoint: Any) -> Any:
    """The network weights from a PiDiNet file: a training checkpoint (``{"state_dict": ...}``) or a bare
    state dict, with DataParallel's leading ``module.`` dropped from the keys. Anything else is returned as
    it is, for the loader to refuse by name."""
    weights = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    if not isinstance(weights, Mapping):
        return weights
    return {(key[len("module."):] if isinstance(key, str) and key.startswith("module.") else key): value
            for key, value in weights.items()}


def pidi_edge_probability(net: PiDiNet, rgb: "np.ndarray") -> "np.ndarray":
    """The fused edge probability (0..1, float32 [H, W]) of an RGB uint8 image [H, W, 3]."""
    import numpy as np

    device = next(net.parameters()).device
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    with torch.no_grad():
        pixels = (torch.from_numpy(bgr).float().to(device) / 255.0).permute(2, 0, 1).unsqueeze(0)
        return net(pixels)[-1][0, 0].float().cpu().numpy()
