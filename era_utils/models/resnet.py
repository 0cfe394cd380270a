"""ResNets written the torchvision way, and the CIFAR ResNet-18/34 of assignment S7.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition" (2015),
https://arxiv.org/abs/1512.03385. `conv3x3`/`conv1x1`, `BasicBlock`/`Bottleneck` with an
`expansion`, and `ResNet._make_layer` (a 1x1 downsample shortcut only where the shape changes)
follow torchvision's `models/resnet.py`. These blocks are the only ones in the package: the
face ResNets in `face_resnet.py` reuse them with the ImageNet stem.

CIFAR stem (S7): one 3x3 conv at stride 1 and no max-pool, so 32x32 images keep their
resolution into layer1 (32 -> 32 -> 16 -> 8 -> 4). ImageNet stem (faces): 7x7/2 conv + 3x3/2
max-pool (224 -> 56 before layer1).
"""
from __future__ import annotations

from typing import Type, Union

import torch
import torch.nn as nn

from era_utils.models.base import ClassifierBase
from era_utils.models.registry import register_model

__all__ = ["conv3x3", "conv1x1", "BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with 'same' padding; no bias because a BatchNorm follows."""
    return nn.Conv2d(
        in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
        groups=groups, dilation=dilation, bias=False,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution (channel mixing / shortcut projection); no bias because a BatchNorm follows."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs + identity (or projected) shortcut: ResNet-18/34."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride, "ResNet v1.5") -> 1x1 expand x4: ResNet-50 and deeper."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = Type[Union[BasicBlock, Bottleneck]]


class ResNet(ClassifierBase):
    """ResNet with a CIFAR stem (3x3/1, no max-pool) or an ImageNet stem (7x7/2 + max-pool 3x3/2)."""

    cam_stages = ("layer1", "layer2", "layer3", "layer4")

    def __init__(
        self,
        block: Block,
        layers: list[int],
        num_classes: int = 10,
        in_channels: int = 3,
        stem: str = "cifar",
        zero_init_residual: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_channels, head_dropout=dropout)
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}.")
        self.inplanes = 64
        if stem == "cifar":
            self.conv1 = conv3x3(in_channels, 64)  # (B, 64, 32, 32) on CIFAR
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)  # 224 -> 112
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # 112 -> 56
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        # Adaptive, so any input size works (Fashion-MNIST 28/32 px stands in for 224 px faces).
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embedding_dim = 512 * block.expansion
        self.fc = nn.Linear(self.embedding_dim, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each residual branch starts as zero, so every block starts as the identity
            # (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): helps large-batch training.
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        """`blocks` blocks; the first may change the shape, and only then gets a 1x1 projection shortcut."""
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # CIFAR: (B, 64, 32, 32); faces: (B, 64, 56, 56)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)  # CIFAR: (B, 512, 4, 4); faces: (B, 512*expansion, 7, 7)


@register_model(family="resnet_cifar")
def resnet18(num_classes: int = 10, in_channels: int = 3, *, zero_init_residual: bool = False,
             dropout: float = 0.0) -> ResNet:
    """ResNet-18 for CIFAR (He et al. 2015; 3x3 stem, no max-pool): 11,173,962 params at 10 classes."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, "cifar", zero_init_residual, dropout)


@register_model(family="resnet_cifar")
def resnet34(num_classes: int = 10, in_channels: int = 3, *, zero_init_residual: bool = False,
             dropout: float = 0.0) -> ResNet:
    """ResNet-34 for CIFAR (He et al. 2015; 3x3 stem, no max-pool): 21,282,122 params at 10 classes."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, "cifar", zero_init_residual, dropout)
