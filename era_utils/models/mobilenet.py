"""MobileNetV2 for HW2P2 faces (seed 000, experiment 2).

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (2018),
https://arxiv.org/abs/1801.04381. Stem Conv3x3(32)/2, then inverted residual blocks
(1x1 expand -> 3x3 depthwise -> 1x1 linear projection, shortcut when stride 1 and shapes match),
a 1x1 conv to 1280 channels, adaptive average pooling (the seed's AvgPool2d(7) only fits
224 px input) and a Linear. The stage table is the seed's: it expands every stage by 6,
where the paper uses 1 for the first stage.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from era_utils.models.base import ClassifierBase
from era_utils.models.registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2", "SEED_STAGES"]

# (expand ratio t, output channels c, blocks n, stride of the first block s), seed 000's table.
SEED_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (6, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def conv_bn_relu6(in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv -> BN -> ReLU6 (ReLU6 keeps activations small for low-precision inference, per the paper)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand (feature mixing) -> 3x3 depthwise (spatial mixing) -> 1x1 linear bottleneck."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_res = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu6(in_ch, hidden, kernel_size=1))
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            # Linear bottleneck: no ReLU after the projection, it would destroy information in few channels.
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(ClassifierBase):
    """MobileNetV2: stem -> stages (inverted residuals) -> 1x1 conv to 1280 -> GAP -> Linear."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        stages: tuple[tuple[int, int, int, int], ...] = SEED_STAGES,
        last_channels: int = 1280,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(in_channels, head_dropout=dropout)
        self.stem = conv_bn_relu6(in_channels, 32, stride=2)  # 224 -> 112
        ch = 32
        blocks = []
        for t, c, n, s in stages:
            # Only the first block of a stage changes channels and carries the stride.
            stage = [InvertedResidual(ch if i == 0 else c, c, s if i == 0 else 1, t) for i in range(n)]
            blocks.append(nn.Sequential(*stage))
            ch = c
        self.stages = nn.Sequential(*blocks)  # (B, 320, 7, 7) at 224 px
        self.final_conv = conv_bn_relu6(ch, last_channels, kernel_size=1)  # (B, 1280, 7, 7)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embedding_dim = last_channels
        self.fc = nn.Linear(last_channels, num_classes)
        # CAM stages: the last stage at each resolution (the one before a stride-2 stage), then the head.
        strides = [s for _, _, _, s in stages] + [2]
        self.cam_stages = tuple(f"stages.{i}" for i in range(len(stages)) if strides[i + 1] == 2) + ("final_conv",)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.stages(self.stem(x)))  # (B, 1280, H/32, W/32)


@register_model(input_size=(3, 224, 224), family="mobilenet")
def mobilenet_v2(num_classes: int = 10, in_channels: int = 3, *, dropout: float = 0.2) -> MobileNetV2:
    """MobileNetV2 (Sandler et al. 2018) with seed 000's stage table, 1280-channel head, adaptive pooling."""
    return MobileNetV2(num_classes, in_channels, dropout=dropout)
