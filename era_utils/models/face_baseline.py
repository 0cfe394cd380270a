"""The HW2P2 baseline: seed 000's "very simple network" (experiment 1), four convs and a Linear.

    conv1: Conv7x7(64)/4, pad 1  -BN-ReLU   224 -> 55
    conv2: Conv3x3(128)/2, pad 1 -BN-ReLU    55 -> 28
    conv3: Conv3x3(256)/2, pad 2 -BN-ReLU    28 -> 15
    conv4: Conv3x3(512)/2, pad 0 -BN-ReLU    15 -> 7
    AdaptiveAvgPool2d(1) -> Linear(512, num_classes)
The seed pooled with AvgPool3d((1, 7, 7)), which only fits 224 px input; adaptive pooling is the
same there and also works on 28/32 px Fashion-MNIST. Convs are bias-free since BN follows each.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from era_utils.models.base import ClassifierBase
from era_utils.models.registry import register_model

__all__ = ["FaceBaseline", "face_baseline"]


def _conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class FaceBaseline(ClassifierBase):
    """Four strided conv-BN-ReLU layers (64/128/256/512), global average pool, Linear."""

    cam_stages = ("conv1", "conv2", "conv3", "conv4")

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__(in_channels, head_dropout=dropout)
        self.conv1 = _conv_bn_relu(in_channels, 64, 7, 4, 1)  # (B, 64, 55, 55) at 224 px
        self.conv2 = _conv_bn_relu(64, 128, 3, 2, 1)  # (B, 128, 28, 28)
        self.conv3 = _conv_bn_relu(128, 256, 3, 2, 2)  # (B, 256, 15, 15)
        self.conv4 = _conv_bn_relu(256, 512, 3, 2, 0)  # (B, 512, 7, 7)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embedding_dim = 512
        self.fc = nn.Linear(512, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv4(self.conv3(self.conv2(self.conv1(x))))


@register_model(input_size=(3, 224, 224), family="face_baseline")
def face_baseline(num_classes: int = 10, in_channels: int = 3, *, dropout: float = 0.0) -> FaceBaseline:
    """HW2P2 baseline (seed 000, experiment 1): 4 strided convs 64/128/256/512 + BN/ReLU, GAP, Linear."""
    return FaceBaseline(num_classes, in_channels, dropout)
