"""CIFAR ResNet-20/32/56 (He et al. 2016, Sec. 4.2), the backbone of iCaRL, LUCIR, BiC, WA, ABD.

3x3 conv 16 -> 3 stages of n basic blocks (16, 32, 64 channels, strides 1/2/2; depth = 6n + 2) with
parameter-free option-A shortcuts (stride-2 subsampling, zero-padded extra channels, as PyCIL's
``resnet32``), global average pooling, 64 features. ``last_relu=False`` drops the ReLU after the last
block, as iCaRL and LUCIR do (features can then be negative).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from libcontinual.backbones.base import Backbone, init_conv_bn_
from libcontinual.errors import ConfigError
from libcontinual.registry import register_backbone

ShortcutFactory = Callable[[int, int, int], nn.Module]


def conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and append zero channels (no parameters)."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels)) if self.extra_channels else x


def option_a_shortcut(in_planes: int, planes: int, stride: int) -> nn.Module:
    """Parameter-free shortcut where the shape changes, identity elsewhere."""
    if stride == 1 and in_planes == planes:
        return nn.Identity()
    return ZeroPadShortcut(stride, planes - in_planes)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU unless ``relu_out`` is False."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: nn.Module, relu_out: bool) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = shortcut
        self.relu_out = relu_out

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return F.relu(out, inplace=True) if self.relu_out else out


def make_stage(
    in_planes: int, planes: int, num_blocks: int, stride: int, shortcut: ShortcutFactory, last_relu: bool
) -> nn.Sequential:
    """``num_blocks`` blocks, the first one changing resolution/width; ``last_relu`` applies to the last."""
    blocks = []
    for i in range(num_blocks):
        block_in, block_stride = (in_planes, stride) if i == 0 else (planes, 1)
        relu_out = last_relu or i < num_blocks - 1
        blocks.append(
            BasicBlock(block_in, planes, block_stride, shortcut(block_in, planes, block_stride), relu_out)
        )
    return nn.Sequential(*blocks)


class CifarResNet(Backbone):
    """ResNet-(6n+2) for 32x32 images (works on any size >= 8x8); ``num_features = 64``."""

    def __init__(self, depth: int, in_channels: int = 3, last_relu: bool = True) -> None:
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        super().__init__(num_features=64)
        n = (depth - 2) // 6
        self.stem = nn.Sequential(conv3x3(in_channels, 16), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.stage1 = make_stage(16, 16, n, 1, option_a_shortcut, last_relu=True)
        self.stage2 = make_stage(16, 32, n, 2, option_a_shortcut, last_relu=True)
        self.stage3 = make_stage(32, 64, n, 2, option_a_shortcut, last_relu=last_relu)
        init_conv_bn_(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return x.mean(dim=(2, 3))


@register_backbone("resnet8")
def resnet8(in_channels: int = 3, last_relu: bool = True) -> CifarResNet:
    """ResNet-8 (n = 1): one block per stage; for tests, demos and quick experiments."""
    return CifarResNet(8, in_channels=in_channels, last_relu=last_relu)


@register_backbone("resnet20")
def resnet20(in_channels: int = 3, last_relu: bool = True) -> CifarResNet:
    """ResNet-20 (n = 3), 0.27 M parameters without the head."""
    return CifarResNet(20, in_channels=in_channels, last_relu=last_relu)


@register_backbone("resnet32")
def resnet32(in_channels: int = 3, last_relu: bool = True) -> CifarResNet:
    """ResNet-32 (n = 5), 0.46 M parameters without the head; iCaRL/LUCIR use ``last_relu=False``."""
    return CifarResNet(32, in_channels=in_channels, last_relu=last_relu)


@register_backbone("resnet56")
def resnet56(in_channels: int = 3, last_relu: bool = True) -> CifarResNet:
    """ResNet-56 (n = 9), 0.85 M parameters without the head."""
    return CifarResNet(56, in_channels=in_channels, last_relu=last_relu)
