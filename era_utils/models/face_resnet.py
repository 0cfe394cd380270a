"""HW2P2 face-classification ResNets: ResNet-34 and ResNet-50 with the ImageNet stem.

He et al. 2015 (https://arxiv.org/abs/1512.03385). Same blocks as the CIFAR ResNets
(`era_utils.models.resnet`), but the stem is 7x7/2 conv + BN + ReLU + 3x3/2 max-pool, for
3x224x224 face crops (seeds 000 and 001). The embedding for verification is the pooled
512 (ResNet-34) or 2048 (ResNet-50) features before the 7000-way classifier.
Adaptive average pooling lets Fashion-MNIST (28/32 px) stand in for faces in tests.
"""
from __future__ import annotations

from era_utils.models.registry import register_model
from era_utils.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["face_resnet34", "face_resnet50"]


@register_model(input_size=(3, 224, 224), family="face_resnet")
def face_resnet34(num_classes: int = 10, in_channels: int = 3, *, zero_init_residual: bool = False,
                  dropout: float = 0.0) -> ResNet:
    """ResNet-34 for 224 px faces (He et al. 2015; BasicBlock [3,4,6,3], ImageNet stem; seed 000's best model)."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, "imagenet", zero_init_residual, dropout)


@register_model(input_size=(3, 224, 224), family="face_resnet")
def face_resnet50(num_classes: int = 10, in_channels: int = 3, *, zero_init_residual: bool = False,
                  dropout: float = 0.0) -> ResNet:
    """ResNet-50 for 224 px faces (He et al. 2015; Bottleneck [3,4,6,3]): 37,851,032 params at 7000 classes."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, "imagenet", zero_init_residual, dropout)
