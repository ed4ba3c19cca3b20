"""NPR detector (Tan et al., "Rethinking the Up-Sampling Operations in CNN-based
Generative Network for Generalizable Deepfake Detection", CVPR 2024).

Generators up-sample (nearest, transposed conv, learned decoders); that leaves a
local correlation between neighbouring pixels. NPR feeds the network the
neighbouring-pixel residual ``x - nearest_up(nearest_down(x))`` (scaled by 2/3) and
uses a deliberately shallow ResNet-50 (3x3 stride-2 stem, layer1, layer2, global
pool, one logit): ~1.4 M parameters, fast enough for CPU serving.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bitmind.models.registry import register_model


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def npr_residual(x: torch.Tensor, factor: float = 0.5) -> torch.Tensor:
    """Neighbouring-pixel residual: x minus its nearest down/up-sampled copy."""
    down = F.interpolate(x, scale_factor=factor, mode="nearest", recompute_scale_factor=True)
    up = F.interpolate(down, size=x.shape[-2:], mode="nearest")
    return x - up


class NPR(nn.Module):
    """ResNet-50 truncated after layer2, on the NPR residual. Output: one logit."""

    def __init__(self, layers=(3, 4), width: int = 64, num_classes: int = 1, dropout: float = 0.0):
        super().__init__()
        self.config = {"layers": list(layers), "width": width, "num_classes": num_classes, "dropout": dropout}
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc1 = nn.Linear(width * 2 * Bottleneck.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # zero-init last BN of each block: starts as identity
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = npr_residual(x) * (2.0 / 3.0)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc1(self.dropout(x))


@register_model("npr")
def build_npr(**config) -> NPR:
    return NPR(**config)
