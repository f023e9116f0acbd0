"""M-LSD "large" (MobileNetV2 backbone) line-segment detector, as in ``mlsd_large_512_fp32.pth``.

Module and parameter names follow the published checkpoint, so it loads with ``strict=True``:
``backbone.features.<i>`` is a MobileNetV2 cut after its 96-channel stage (14 layers), and ``block15`` ..
``block23`` are the decoder, which merges the backbone's features from 1/16 back up to 1/2 resolution. The
network's input is RGB plus a constant fourth channel, scaled to [-1, 1]; its output is the 9-channel
"TP map" at half resolution, of which channel 0 is a line-centre heat map and channels 1-4 the displacements
from each centre to the two ends of its segment. :func:`decode_segments` turns that into segments.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# (expansion, output channels, repeats, first stride) of each MobileNetV2 stage kept by M-LSD.
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
# The backbone layers whose outputs the decoder uses: 1/2, 1/4, 1/8, 1/16 and 1/16 resolution.
_TAPS = (1, 3, 6, 10, 13)


class _ConvBNReLU6(nn.Sequential):
    """Conv, batch norm, ReLU6. A stride-2 conv pads one pixel right and bottom only, as TFLite does (the
    network was trained that way), instead of PyTorch's symmetric padding."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        pad = 0 if stride == 2 else (kernel - 1) // 2
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = F.pad(x, (0, 1, 0, 1))
        return super().forward(x)


class _InvertedResidual(nn.Module):
    """MobileNetV2 block: optional 1x1 expansion, depthwise 3x3, linear 1x1 projection; a skip connection
    when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = int(round(cin * expansion))
        layers: list[nn.Module] = [_ConvBNReLU6(cin, hidden, kernel=1)] if expansion != 1 else []
        layers += [_ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.skip else y


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_ConvBNReLU6(4, 32, stride=2)]
        channels = 32
        for expansion, cout, repeats, stride in _STAGES:
            for i in range(repeats):
                layers.append(_InvertedResidual(channels, cout, stride if i == 0 else 1, expansion))
                channels = cout
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                taps.append(x)
        return taps


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Merge(nn.Module):
    """Decoder "type A": 1x1 convs on a skip feature (``conv2``) and the coarser decoder feature (``conv1``),
    the latter upsampled x2 unless already at the skip's size, concatenated."""

    def __init__(self, skip_in: int, deep_in: int, skip_out: int, deep_out: int, upscale: bool = True) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(deep_in, deep_out, 1)
        self.conv2 = _conv_bn_relu(skip_in, skip_out, 1)
        self.upscale = upscale

    def forward(self, skip: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        deep = self.conv1(deep)
        if self.upscale:
            deep = F.interpolate(deep, scale_factor=2.0, mode="bilinear", align_corners=True)
        return torch.cat((self.conv2(skip), deep), dim=1)


class _Refine(nn.Module):
    """Decoder "type B": a residual 3x3 conv, then a 3x3 conv to ``cout`` channels."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, cin, 3)
        self.conv2 = _conv_bn_relu(cin, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x) + x)


class _Head(nn.Module):
    """Decoder "type C": a dilated 3x3 conv (wide context), a 3x3 conv, a 1x1 conv to the output maps."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, cin, 3, dilation=5)
        self.conv2 = _conv_bn_relu(cin, cin, 3)
        self.conv3 = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class MobileV2MLSDLarge(nn.Module):
    """The whole detector: (1, 4, H, W) in [-1, 1], H and W multiples of 16 -> the (1, 9, H/2, W/2) TP map."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _Backbone()
        self.block15 = _Merge(64, 96, 64, 64, upscale=False)
        self.block16 = _Refine(128, 64)
        self.block17 = _Merge(32, 64, 64, 64)
        self.block18 = _Refine(128, 64)
        self.block19 = _Merge(24, 64, 64, 64)
        self.block20 = _Refine(128, 64)
        self.block21 = _Merge(16, 64, 64, 64)
        self.block22 = _Refine(128, 64)
        self.block23 = _Head(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half, quarter, eighth, sixteenth, deep = self.backbone(x)
        x = self.block16(self.block15(sixteenth, deep))
        x = self.block18(self.block17(eighth, x))
        x = self.block20(self.block19(quarter, x))
        x = self.block22(self.block21(half, x))
        return self.block23(x)[:, 7:]  # the first 7 maps were only used in training


def network_input(rgb: np.ndarray) -> torch.Tensor:
    """An (H, W, 3) uint8 RGB array as the network's (1, 4, H, W) input: a constant channel of ones appended,
    then everything (the ones too) mapped from [0, 255] to [-1, 1]."""
    ones = np.ones(rgb.shape[:2] + (1,), dtype=np.float32)
    stacked = np.concatenate([rgb.astype(np.float32), ones], axis=2)
    return torch.from_numpy(stacked / 127.5 - 1.0).permute(2, 0, 1).unsqueeze(0).contiguous()


def decode_segments(tp_map: torch.Tensor, score_threshold: float, distance_threshold: float, *,
                    top_k: int = 200, window: int = 3) -> np.ndarray:
    """Line segments ``(x0, y0, x1, y1)`` in input-image pixels from a (1, 9, h, w) TP map.

    A segment centre is a local maximum of the sigmoid heat map over a ``window`` x ``window`` neighbourhood,
    among the ``top_k`` strongest; it is kept when its score exceeds ``score_threshold`` and its two ends
    (centre + displacements) lie more than ``distance_threshold`` TP-map pixels apart. Coordinates double,
    since the map has half the input's resolution.
    """
    heat = torch.sigmoid(tp_map[:, 0])
    peaks = F.max_pool2d(heat, window, stride=1, padding=(window - 1) // 2)
    heat = (heat * (peaks == heat)).flatten()
    width = tp_map.shape[-1]
    scores, index = torch.topk(heat, min(top_k, heat.numel()))
    ys, xs = (index // width).cpu().numpy(), (index % width).cpu().numpy()
    scores_np = scores.float().cpu().numpy()
    shifts = tp_map[0, 1:5].float().permute(1, 2, 0).cpu().numpy()  # (h, w, [dx0, dy0, dx1, dy1])
    segments = []
    for y, x, score in zip(ys, xs, scores_np):
        dx0, dy0, dx1, dy1 = shifts[y, x]
        length = float(np.hypot(dx0 - dx1, dy0 - dy1))
        if score > score_threshold and length > distance_threshold:
            segments.append((x + dx0, y + dy0, x + dx1, y + dy1))
    return 2.0 * np.asarray(segments, dtype=np.float64).reshape(-1, 4)


def draw_segments(segments: Any, height: int, width: int) -> np.ndarray:
    """A (height, width) uint8 map with each segment drawn as a 1 px white line (coordinates truncated to
    integers) on black."""
    import cv2

    canvas = np.zeros((height, width), dtype=np.uint8)
    for x0, y0, x1, y1 in np.asarray(segments).reshape(-1, 4):
        cv2.line(canvas, (int(x0), int(y0)), (int(x1), int(y1)), 255, 1)
    return canvas
