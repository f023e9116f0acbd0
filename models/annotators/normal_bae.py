"""NormalBae surface-normal estimator (Bae et al., "Estimating and Exploiting the Aleatoric Uncertainty in
Surface Normal Estimation"), as in the ``scannet.pt`` annotator checkpoint.

The encoder is an EfficientNet-B5 in its TensorFlow-compatible form (``tf_efficientnet_b5_ap``: TF "same"
padding, batch-norm epsilon 1e-3, swish), with the module names of the ``geffnet`` package that the
checkpoint was saved from (``encoder.original_model.conv_stem`` / ``bn1`` / ``blocks.<stage>.<block>`` /
``conv_head`` / ``bn2``). The decoder upsamples the 1/32 features back to 1/2 resolution with skip
connections, predicts normals and a concentration ``kappa`` at 1/8 resolution, then refines them at 1/4, 1/2
and full resolution with per-pixel MLPs (1x1 ``Conv1d``). Only the inference path is written here (training
samples uncertain pixels instead of refining all of them).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_BN_EPS = 1e-3  # TensorFlow's default, which the ported weights were trained with
# EfficientNet-B0 stages: (block kind, kernel, stride, expansion, output channels, repeats). B5 scales them.
_B0_STAGES = (("ds", 3, 1, 1, 16, 1), ("ir", 3, 2, 6, 24, 2), ("ir", 5, 2, 6, 40, 2), ("ir", 3, 2, 6, 80, 3),
              ("ir", 5, 1, 6, 112, 3), ("ir", 5, 2, 6, 192, 4), ("ir", 3, 1, 6, 320, 1))
_B5_WIDTH, _B5_DEPTH = 1.6, 2.2


def _divisible(value: float, divisor: int = 8) -> int:
    """Channels rounded to a multiple of ``divisor``, never more than 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class _SameConv2d(nn.Conv2d):
    """A bias-free conv with TensorFlow's "same" padding: output size ceil(input / stride), the odd pixel of
    padding at the bottom/right. Stride 1 pads symmetrically, which is the same thing."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride, padding=(kernel - 1) // 2 if stride == 1 else 0,
                         groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        kernel, stride = self.kernel_size[0], self.stride[0]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dimension (width) first
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class _SqueezeExcite(nn.Module):
    """Channel gating from the spatial mean: reduce to a quarter of the *block input's* channels, swish,
    expand, sigmoid."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.conv_expand(F.silu(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class _DepthwiseSeparable(nn.Module):
    """The first stage's block: depthwise conv, SE, pointwise projection (no expansion)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = _SameConv2d(cin, cin, kernel, stride, groups=cin)
        self.bn1 = _bn(cin)
        self.se = _SqueezeExcite(cin, max(1, int(cin * 0.25 + 0.5)))
        self.conv_pw = _SameConv2d(cin, cout, 1)
        self.bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.se(F.silu(self.bn1(self.conv_dw(x))))))
        return x + y if self.skip else y


class _InvertedResidual(nn.Module):
    """MBConv: pointwise expansion, depthwise conv, SE, linear pointwise projection; skip when shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = _divisible(cin * expansion)
        self.conv_pw = _SameConv2d(cin, mid, 1)
        self.bn1 = _bn(mid)
        self.conv_dw = _SameConv2d(mid, mid, kernel, stride, groups=mid)
        self.bn2 = _bn(mid)
        self.se = _SqueezeExcite(mid, max(1, int(cin * 0.25 + 0.5)))
        self.conv_pwl = _SameConv2d(mid, cout, 1)
        self.bn3 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.bn1(self.conv_pw(x)))
        y = self.se(F.silu(self.bn2(self.conv_dw(y))))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.skip else y


class EfficientNetB5(nn.Module):
    """The encoder body (no pooling or classifier). :meth:`forward` returns the output of every stage and
    the head conv's output (before its batch norm, which the decoder doesn't use but the checkpoint holds)."""

    def __init__(self) -> None:
        super().__init__()
        channels = _divisible(32 * _B5_WIDTH)
        self.conv_stem = _SameConv2d(3, channels, 3, stride=2)
        self.bn1 = _bn(channels)
        stages = []
        for kind, kernel, stride, expansion, cout, repeats in _B0_STAGES:
            cout = _divisible(cout * _B5_WIDTH)
            blocks = []
            for i in range(math.ceil(repeats * _B5_DEPTH)):
                step = stride if i == 0 else 1
                blocks.append(_DepthwiseSeparable(channels, cout, kernel, step) if kind == "ds"
                              else _InvertedResidual(channels, cout, kernel, step, expansion))
                channels = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        features = _divisible(1280 * _B5_WIDTH)
        self.conv_head = _SameConv2d(channels, features, 1)
        self.bn2 = _bn(features)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = F.silu(self.bn1(self.conv_stem(x)))
        stage_outputs = []
        for stage in self.blocks:
            x = stage(x)
            stage_outputs.append(x)
        return stage_outputs, self.conv_head(x)


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.original_model = EfficientNetB5()


class _UpSample(nn.Module):
    """Bilinear upsampling to the skip feature's size, concatenation, two 3x3 conv + BN + LeakyReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self._net = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(),
                                  nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU())

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self._net(torch.cat([x, skip], dim=1))


def _pixel_mlp(cin: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, 128, 1), nn.ReLU(), nn.Conv1d(128, 128, 1), nn.ReLU(),
                         nn.Conv1d(128, 128, 1), nn.ReLU(), nn.Conv1d(128, 4, 1))


def normalize_prediction(raw: torch.Tensor) -> torch.Tensor:
    """Channels 0-2 scaled to a unit normal vector; channel 3 made a positive concentration (ELU + 1.01)."""
    normal, kappa = raw[:, :3], raw[:, 3:]
    normal = normal / (torch.sqrt((normal ** 2).sum(dim=1, keepdim=True)) + 1e-10)
    return torch.cat([normal, F.elu(kappa) + 1.01], dim=1)


def _double(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(2048, 2048, 1)
        self.up1 = _UpSample(2048 + 176, 1024)
        self.up2 = _UpSample(1024 + 64, 512)
        self.up3 = _UpSample(512 + 40, 256)
        self.up4 = _UpSample(256 + 24, 128)
        self.out_conv_res8 = nn.Conv2d(512, 4, 3, padding=1)
        self.out_conv_res4 = _pixel_mlp(512 + 4)
        self.out_conv_res2 = _pixel_mlp(256 + 4)
        self.out_conv_res1 = _pixel_mlp(128 + 4)

    @staticmethod
    def _refine(mlp: nn.Sequential, features: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """The prediction at twice ``coarse``'s resolution, every pixel refined from the upsampled features and
        the upsampled coarse prediction."""
        stacked = torch.cat([_double(features), _double(coarse)], dim=1)
        batch, channels, height, width = stacked.shape
        refined = mlp(stacked.view(batch, channels, -1))
        return normalize_prediction(refined).view(batch, 4, height, width)

    def forward(self, stages: list[torch.Tensor], head: torch.Tensor) -> list[torch.Tensor]:
        half, quarter, eighth, sixteenth = stages[0], stages[1], stages[2], stages[4]
        d1 = self.up1(self.conv2(head), sixteenth)
        d2 = self.up2(d1, eighth)
        d3 = self.up3(d2, quarter)
        d4 = self.up4(d3, half)
        res8 = normalize_prediction(self.out_conv_res8(d2))
        res4 = self._refine(self.out_conv_res4, d2, res8)
        res2 = self._refine(self.out_conv_res2, d3, res4)
        res1 = self._refine(self.out_conv_res1, d4, res2)
        return [res8, res4, res2, res1]


class NormalBaeNet(nn.Module):
    """ImageNet-normalised RGB (1, 3, H, W), H and W multiples of 8 -> predictions (normal x, y, z and kappa)
    at 1/8, 1/4, 1/2 and full resolution; the last one is the normal map."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _Encoder()
        self.decoder = _Decoder()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.decoder(*self.encoder.original_model(x))


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def network_input(rgb: Any) -> torch.Tensor:
    """An (H, W, 3) uint8 RGB array as the network's input: [0, 1], then ImageNet mean/std normalised."""
    pixels = torch.from_numpy(rgb).float().div(255.0).permute(2, 0, 1).unsqueeze(0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def unwrap_checkpoint(checkpoint: Any) -> Any:
    """The state dict of ``scannet.pt``: its ``model`` entry, keys without the ``module.`` prefix that
    DataParallel training left. A plain state dict (a converted .safetensors) passes through."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, dict):
        return checkpoint
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in checkpoint.items()}
