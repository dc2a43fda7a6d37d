"""ResNet-18 with a CIFAR stem (3x3 conv stride 1, no max-pool), e.g. GEM's reduced ResNet-18 (nf=20).

BasicBlocks [2, 2, 2, 2] of widths nf, 2nf, 4nf, 8nf (strides 1/2/2/2) with 1x1-conv + BN (option-B)
shortcuts where the shape changes; adaptive average pooling to 1x1 (GEM's avg-pool 4 on 32x32 inputs is the
same thing) so any input size >= 8x8 works; ``num_features = 8 * nf``.
"""

from __future__ import annotations

from torch import Tensor, nn

from libcontinual.backbones.base import Backbone, init_conv_bn_
from libcontinual.backbones.resnet_cifar import conv3x3, make_stage
from libcontinual.errors import ConfigError
from libcontinual.registry import register_backbone


def option_b_shortcut(in_planes: int, planes: int, stride: int) -> nn.Module:
    """Projection shortcut (1x1 conv + BN) where the shape changes, identity elsewhere."""
    if stride == 1 and in_planes == planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
    )


class ResNet18(Backbone):
    """ResNet-18 of base width ``nf``; ``last_relu=False`` drops the ReLU after the last block."""

    def __init__(self, in_channels: int = 3, nf: int = 64, last_relu: bool = True) -> None:
        if nf <= 0:
            raise ConfigError(f"resnet18 base width nf must be positive, got {nf}")
        super().__init__(num_features=8 * nf)
        self.stem = nn.Sequential(conv3x3(in_channels, nf), nn.BatchNorm2d(nf), nn.ReLU(inplace=True))
        self.layer1 = make_stage(nf, nf, 2, 1, option_b_shortcut, last_relu=True)
        self.layer2 = make_stage(nf, 2 * nf, 2, 2, option_b_shortcut, last_relu=True)
        self.layer3 = make_stage(2 * nf, 4 * nf, 2, 2, option_b_shortcut, last_relu=True)
        self.layer4 = make_stage(4 * nf, 8 * nf, 2, 2, option_b_shortcut, last_relu=last_relu)
        init_conv_bn_(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return x.mean(dim=(2, 3))


@register_backbone("resnet18")
def resnet18(in_channels: int = 3, nf: int = 64, last_relu: bool = True) -> ResNet18:
    """ResNet-18 (11.2 M parameters at nf=64; GEM's reduced version: nf=20, 1.1 M)."""
    return ResNet18(in_channels=in_channels, nf=nf, last_relu=last_relu)
