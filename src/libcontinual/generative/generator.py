"""The image generator of the ABD code (``models/generator.py``, ``CIFAR_GEN``), sized from the image shape.

z (1000) -> linear to 128 maps of (H/4, W/4) -> BatchNorm -> upsample x2 -> conv 3x3 128 -> BatchNorm
(eps 0.8) -> LeakyReLU 0.2 -> upsample x2 -> conv 3x3 64 -> BatchNorm (eps 0.8) -> LeakyReLU 0.2 ->
conv 3x3 to C channels -> tanh -> BatchNorm without affine parameters. The last BatchNorm puts every
channel at zero mean and unit variance, the range of normalised real images. The two middle BatchNorms
take 0.8 as their second positional argument, which ``nn.BatchNorm2d`` reads as ``eps`` (the reference
code's spelling, kept so the generator trains as it does there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from libcontinual.errors import ConfigError


class CifarGenerator(nn.Module):
    """Maps z ~ N(0, I) of size ``z_dim`` to images of ``image_shape`` (C, H, W), H and W multiples of 4."""

    def __init__(self, image_shape: tuple[int, int, int], z_dim: int = 1000) -> None:
        super().__init__()
        channels, height, width = (int(v) for v in image_shape)
        if height % 4 or width % 4 or height < 4 or width < 4:
            raise ConfigError(
                f"The data-free generator upsamples twice by 2, so image height and width must be multiples "
                f"of 4; the images are {height}x{width}. Set 'image_size' to a multiple of 4."
            )
        self.image_shape = (channels, height, width)
        self.z_dim = z_dim
        self.init_size = (height // 4, width // 4)
        self.project = nn.Linear(z_dim, 128 * self.init_size[0] * self.init_size[1])
        self.bn0 = nn.BatchNorm2d(128)
        self.conv1 = nn.Conv2d(128, 128, 3, stride=1, padding=1)
        self.bn1 = nn.BatchNorm2d(128, eps=0.8)
        self.conv2 = nn.Conv2d(128, 64, 3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(64, eps=0.8)
        self.conv3 = nn.Conv2d(64, channels, 3, stride=1, padding=1)
        self.bn_out = nn.BatchNorm2d(channels, affine=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], 128, *self.init_size)
        x = F.interpolate(self.bn0(x), scale_factor=2)
        x = F.leaky_relu(self.bn1(self.conv1(x)), 0.2)
        x = F.interpolate(x, scale_factor=2)
        x = F.leaky_relu(self.bn2(self.conv2(x)), 0.2)
        return self.bn_out(torch.tanh(self.conv3(x)))
