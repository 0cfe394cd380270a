"""The S10 custom ResNet (the DAWNBench "ResNet-9" shape, David Page / myrtle.ai 2018).

    prep   : Conv3x3(64)-BN-ReLU                                   (B,  64, 32, 32)
    layer1 : X = Conv3x3(128)-MaxPool2-BN-ReLU; out X + R1(X)      (B, 128, 16, 16)
    layer2 : Conv3x3(256)-MaxPool2-BN-ReLU                         (B, 256,  8,  8)
    layer3 : X = Conv3x3(512)-MaxPool2-BN-ReLU; out X + R2(X)      (B, 512,  4,  4)
    pool   : MaxPool(4) -> (B, 512, 1, 1);  fc: Linear(512, 10)
where R = ResBlock: Conv-BN-ReLU-Conv-BN-ReLU. Every conv and the FC are bias-free (each conv is
followed by BN; the FC follows the paper's recipe): 6,573,120 parameters at 10 classes.
No softmax: `nn.CrossEntropyLoss` applies log-softmax itself.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from era_utils.models.base import ClassifierBase
from era_utils.models.registry import register_model
from era_utils.models.resnet import conv3x3

__all__ = ["ResBlock", "ResLayer", "CustomResNet", "custom_resnet"]


def conv_bn_relu(in_ch: int, out_ch: int, pool: bool = False) -> nn.Sequential:
    """Conv3x3 -> [MaxPool2] -> BN -> ReLU (the pool sits before BN, as the assignment orders it)."""
    layers: list[nn.Module] = [conv3x3(in_ch, out_ch)]
    if pool:
        layers.append(nn.MaxPool2d(2))  # halves H and W
    layers += [nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """R(X) = (Conv-BN-ReLU-Conv-BN-ReLU)(X); the caller adds X (the assignment's Add(X, R))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(channels, channels), conv_bn_relu(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResLayer(nn.Module):
    """X = Conv3x3-MaxPool2-BN-ReLU(x); returns X + ResBlock(X), or X alone when `residual` is False."""

    def __init__(self, in_ch: int, out_ch: int, residual: bool) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_ch, out_ch, pool=True)
        self.res = ResBlock(out_ch) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if self.res is None else x + self.res(x)


class CustomResNet(ClassifierBase):
    """S10 custom ResNet: prep -> layer1 (res) -> layer2 -> layer3 (res) -> max-pool -> FC."""

    cam_stages = ("prep", "layer1", "layer2", "layer3")

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__(in_channels, head_dropout=dropout)
        self.prep = conv_bn_relu(in_channels, 64)  # (B, 64, 32, 32)
        self.layer1 = ResLayer(64, 128, residual=True)  # (B, 128, 16, 16)
        self.layer2 = ResLayer(128, 256, residual=False)  # (B, 256, 8, 8)
        self.layer3 = ResLayer(256, 512, residual=True)  # (B, 512, 4, 4)
        # The assignment's MaxPool(4): on 32x32 input the map is 4x4, so this is the same
        # operation; adaptive so 28 px Fashion-MNIST or larger images also reach (B, 512, 1, 1).
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.embedding_dim = 512
        self.fc = nn.Linear(512, num_classes, bias=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(self.prep(x))))  # (B, 512, 4, 4) on 32x32


@register_model(family="custom_resnet")
def custom_resnet(num_classes: int = 10, in_channels: int = 3, *, dropout: float = 0.0) -> CustomResNet:
    """S10 custom ResNet (DAWNBench ResNet-9 shape, He et al. 2015 residuals): 6,573,120 params at 10 classes."""
    return CustomResNet(num_classes, in_channels, dropout)
