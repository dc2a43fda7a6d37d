"""The generator's loss terms, as the ABD code (``learners/datafree_helper.py``) computes them.

``content_loss``: CE of the teacher's logits at temperature ``T`` against their own argmax (confident
samples). ``diversity_loss``: 1 + sum p log p / log K of the batch-mean softmax (0 when the batch covers
the K classes evenly, 1 when it is one class). ``smoothness_loss``: MSE between the images and their blur
by a depthwise 5x5 Gaussian on reflect-padded images (an image prior against high-frequency noise).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def content_loss(logits: torch.Tensor, temperature: float = 1000.0) -> torch.Tensor:
    """CE(logits / T, argmax logits): pushes each sample towards the class the teacher already sees."""
    return F.cross_entropy(logits / temperature, logits.argmax(dim=1))


def diversity_loss(logits: torch.Tensor) -> torch.Tensor:
    """1 + sum(p log p) / log K of the batch-mean softmax over K classes; 0 for K = 1 (nothing to balance)."""
    num_classes = logits.shape[1]
    if num_classes < 2:
        return logits.new_zeros(())
    mean_probability = F.softmax(logits, dim=1).mean(dim=0)
    return 1.0 + torch.special.xlogy(mean_probability, mean_probability).sum() / math.log(num_classes)


def gaussian_kernel(size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """(size, size) kernel summing to 1, with the reference code's formula exp(-((d - c) / (2 sigma))^2)
    per axis, i.e. a Gaussian of standard deviation sqrt(2) * sigma (the code's quirk, kept)."""
    coords = torch.arange(size, dtype=torch.float32)
    center = (size - 1) / 2
    axis = torch.exp(-(((coords - center) / (2 * sigma)) ** 2)) / (sigma * math.sqrt(2 * math.pi))
    kernel = axis[:, None] * axis[None, :]
    return kernel / kernel.sum()


def smoothness_loss(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between ``images`` (B, C, H, W) and their depthwise blur with ``kernel``."""
    channels = images.shape[1]
    pad = kernel.shape[-1] // 2
    weight = kernel.to(images).expand(channels, 1, *kernel.shape)
    blurred = F.conv2d(F.pad(images, (pad, pad, pad, pad), mode="reflect"), weight, groups=channels)
    return F.mse_loss(images, blurred)
